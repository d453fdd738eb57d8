"""The dashboard as a datasette plugin: three routes on the server ``openended serve`` runs.

    /-/dashboard        the page (HTML; draws with static/dashboard.js, inline SVG, no CDN)
    /-/dashboard.json   what it draws (:class:`openended.dashboard.data.Dashboard`), polled every 2 s
    /-/dashboard.js     the script, from the package

Data are read on datasette's own read-only connection to the served database (``mode=ro``,
through ``Database.execute_fn``), in one read transaction per request. A database with no
campaign, or an SQLite error while the campaign writes, answers the JSON route with HTTP 503 and
``{"error": ...}`` (the page shows it and keeps polling), never a 500.
"""

from __future__ import annotations

import html
import json
import sqlite3
from importlib import resources
from typing import Any

from openended.dashboard.data import collect

__all__ = ["DATA_PATH", "PAGE_PATH", "PLUGIN_NAME", "POLL_MS", "SCRIPT_PATH", "register_plugin"]

PAGE_PATH = "/-/dashboard"
DATA_PATH = "/-/dashboard.json"
SCRIPT_PATH = "/-/dashboard.js"
PLUGIN_NAME = "openended-dashboard"
#: How often the page polls the JSON route, in milliseconds.
POLL_MS = 2000

_NO_STORE = {"Cache-Control": "no-store"}


def _static(name: str) -> str:
    return resources.files("openended.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def _database(datasette: Any) -> Any:
    """The one campaign database datasette serves (``openended serve`` serves exactly one)."""
    dbs = [db for name, db in datasette.databases.items() if name != "_internal" and not db.is_memory]
    if len(dbs) != 1:
        return None
    return dbs[0]


async def _page(datasette: Any, request: Any) -> Any:
    from datasette.utils.asgi import Response

    db = _database(datasette)
    name = db.name if db is not None else ""
    page = _static("dashboard.html")
    for key, value in {
        "__TITLE__": html.escape(f"openended dashboard: {name}" if name else "openended dashboard"),
        "__DATA_URL__": html.escape(datasette.urls.path(DATA_PATH)),
        "__SCRIPT_URL__": html.escape(datasette.urls.path(SCRIPT_PATH)),
        "__INDEX_URL__": html.escape(datasette.urls.instance()),
        "__DB_URL__": html.escape(datasette.urls.database(name) if name else datasette.urls.instance()),
        "__POLL_MS__": str(POLL_MS),
    }.items():
        page = page.replace(key, value)
    return Response.html(page, headers=_NO_STORE)


def _json_response(body: dict, status: int = 200) -> Any:
    from datasette.utils.asgi import Response

    return Response(json.dumps(body, allow_nan=False), status=status, headers=_NO_STORE,
                    content_type="application/json; charset=utf-8")


async def _data(datasette: Any, request: Any) -> Any:
    db = _database(datasette)
    if db is None:
        return _json_response({"error": "the dashboard needs exactly one database served"}, 503)
    try:
        body = await db.execute_fn(lambda conn: collect(conn, db.name).as_dict())
    except LookupError as exc:
        return _json_response({"error": str(exc)}, 503)
    except sqlite3.Error as exc:  # e.g. busy while the campaign checkpoints: the page retries
        return _json_response({"error": f"database error: {exc}"}, 503)
    return _json_response(body)


async def _script(request: Any) -> Any:
    from datasette.utils.asgi import Response

    return Response(_static("dashboard.js"), headers=_NO_STORE, content_type="application/javascript; charset=utf-8")


def _register_routes(datasette: Any) -> list:
    return [(r"^/-/dashboard$", _page), (r"^/-/dashboard\.json$", _data), (r"^/-/dashboard\.js$", _script)]


def _menu_links(datasette: Any, actor: Any, request: Any) -> list[dict[str, str]]:
    return [{"href": datasette.urls.path(PAGE_PATH), "label": "Campaign dashboard"}]


def register_plugin() -> None:
    """Register the dashboard's routes and menu link with datasette's plugin manager (once per process)."""
    from datasette import hookimpl
    from datasette.plugins import pm

    if pm.get_plugin(PLUGIN_NAME) is None:
        plugin = type("openended_dashboard", (), {
            "register_routes": staticmethod(hookimpl(_register_routes)),
            "menu_links": staticmethod(hookimpl(_menu_links)),
        })
        pm.register(plugin, name=PLUGIN_NAME)
