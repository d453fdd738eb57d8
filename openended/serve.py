"""Browse a campaign database in datasette, read-only, with the archive_db named queries as canned queries
and a live campaign dashboard (:mod:`openended.dashboard`) at ``/-/dashboard``.

    openended serve campaign.db              # http://127.0.0.1:8001/ (loopback only)
    openended serve campaign.db --port 9000 --host 0.0.0.0   # visible to the network: says so

The database is served *mutable* (never ``-i``/immutable: the campaign may still be writing, and
datasette would cache counts and hashes of a file it believes frozen) but read-only: datasette
opens mutable files with ``?mode=ro`` for every read, no write canned queries are defined, and
datasette's own SQL box only runs single SELECT statements on those read-only connections.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import os
import re
import sys
from importlib import resources
from pathlib import Path

from archive_db import query_names
from openended import inspection
from openended.dashboard.plugin import PAGE_PATH, register_plugin

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "canned_queries", "datasette_metadata", "make_datasette", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001


def _describe(sql: str, name: str) -> tuple[str, str]:
    """Title and description of a named query from its leading ``--`` comment block."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        text = line[2:].strip()
        if text.lower().startswith("sqlite3 cli:"):
            continue  # how to run it from the shell: not useful in the browser
        lines.append(text)
    text = " ".join(lines)
    text = re.sub(rf"^{re.escape(name)}:\s*", "", text)
    return name.replace("_", " "), text


def canned_queries() -> dict[str, dict]:
    """Every ``archive_db/queries/*.sql`` as a datasette canned query (read-only; :params become form fields)."""
    out = {}
    for name in query_names():
        sql = resources.files("archive_db").joinpath("queries", f"{name}.sql").read_text(encoding="utf-8")
        title, description = _describe(sql, name)
        out[name] = {"sql": sql.strip(), "title": title, "description": description}
    return out


def datasette_metadata(db_path: str | os.PathLike) -> dict:
    """Datasette metadata for one campaign database: title, canned queries, agents-table facets."""
    with inspection.open_db(db_path) as db:
        run = inspection.run_of(db)
    name = Path(db_path).stem
    dashboard = f'<a href="{PAGE_PATH}">Live campaign dashboard</a>: progress, archive heatmap, best lineage, ' \
                "operator success and failures, redrawn every 2 s while the campaign runs."
    return {
        "title": f"openended: {run['task']} ({run['name']})",
        "description_html": f"<p>Campaign database {html.escape(Path(db_path).name)}, served read-only.</p>"
                            f"<p>{dashboard}</p>",
        "databases": {
            name: {
                "description_html": f"<p>{dashboard}</p>",
                "queries": canned_queries(),
                "tables": {
                    "agents": {
                        "description": "Every child ever proposed, failures included (one row per agent).",
                        "facets": ["status", "operator"],
                    },
                },
            }
        },
    }


def _one_line_error(datasette, request, exception):
    """Datasette's handle_exception hook: an ordinary HTTP error (a 404, bad SQL) is one line on stderr."""
    status = getattr(exception, "status", 500)
    first = str(exception).splitlines()[0][:200] if str(exception) else type(exception).__name__
    print(f"serve: {status} {request.path}: {first}", file=sys.stderr, flush=True)
    return None  # datasette's own handler renders the error page


def _quiet_errors() -> None:
    """Datasette prints every error, a 404 included, as a rich traceback with local variables when rich is
    installed (it is, for our CLI); keep its error pages, print one line instead. Once per process."""
    from datasette import handle_exception, hookimpl
    from datasette.plugins import pm

    handle_exception.rich = None  # the module global its default handler checks
    if pm.get_plugin("openended-errors") is None:
        plugin = type("openended_errors", (), {"handle_exception": staticmethod(hookimpl(_one_line_error))})
        pm.register(plugin, name="openended-errors")  # the class itself: datasette lists plugins by __name__


def make_datasette(db_path: str | os.PathLike):
    """A :class:`datasette.app.Datasette` serving ``db_path`` read-only (mutable, ``mode=ro``)."""
    from datasette.app import Datasette

    _quiet_errors()
    register_plugin()
    path = Path(db_path).resolve()
    metadata = datasette_metadata(path)  # also checks it is a campaign database
    ds = Datasette(files=[str(path)], metadata=metadata, crossdb=False,
                   settings={"allow_download": False, "suggest_facets": False})
    names = [n for n in ds.databases if n != "_internal"]
    if names != [path.stem]:  # metadata is keyed by the name datasette derives from the file
        raise inspection.InspectionError(f"serve: datasette named the database {names}, expected {path.stem!r}")
    db = ds.databases[path.stem]
    if not db.is_mutable:
        raise inspection.InspectionError("serve: the database must be served mutable (read-only through mode=ro)")
    return ds


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(db_path: str | os.PathLike, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve ``db_path`` with datasette on ``host:port`` until interrupted."""
    import uvicorn

    if not 0 < int(port) < 65536:
        raise inspection.InspectionError(f"serve: --port must be in 1..65535, not {port}")
    ds = make_datasette(db_path)
    asyncio.run(ds.invoke_startup())
    if not _is_loopback(host):
        print(f"warning: serving on {host}, not loopback: anyone who can reach this machine can read the campaign",
              file=sys.stderr)
    print(f"serving {db_path} read-only at http://{host}:{port}/{Path(db_path).resolve().stem} (Ctrl-C stops)",
          flush=True)
    print(f"live dashboard at http://{host}:{port}{PAGE_PATH}", flush=True)
    uvicorn.run(ds.app(), host=host, port=int(port), log_level="warning", lifespan="on", workers=1)
