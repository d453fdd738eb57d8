"""Opening a campaign database for reading: one snapshot per view, agent ids, read-only SQL.

Every view takes an open read-only :class:`~archive_db.ArchiveDB` (see :func:`open_db`) and never
writes. Each view reads one snapshot (a read transaction), so its numbers agree with each other
even while the campaign driver keeps writing (WAL mode lets readers and the writer work at the
same time).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from archive_db import ArchiveDB, ArchiveDBError

__all__ = ["InspectionError", "QueryRefused", "open_db", "snapshot", "run_of", "resolve_agent", "read_only_query"]


class InspectionError(ValueError):
    """Bad input to an inspection view (unknown agent, missing database, bad option...)."""


class QueryRefused(InspectionError):
    """``query`` refused a statement that would write, attach or change a pragma."""


@contextlib.contextmanager
def open_db(path: str | os.PathLike[str]) -> Iterator[ArchiveDB]:
    """The campaign database at ``path``, read-only; InspectionError if it is missing or holds no run."""
    p = Path(path)
    if not p.exists():
        raise InspectionError(f"no such database: {p}")
    try:
        db = ArchiveDB(p, readonly=True)
    except ArchiveDBError as exc:
        raise InspectionError(str(exc)) from None
    try:
        run_of(db)
        yield db
    finally:
        db.close()


@contextlib.contextmanager
def snapshot(db: ArchiveDB) -> Iterator[ArchiveDB]:
    """One read transaction: every query inside sees the database at the same moment."""
    conn = db.conn
    if conn.in_transaction:  # already inside a snapshot: join it
        yield db
        return
    conn.execute("BEGIN")
    try:
        yield db
    finally:
        conn.execute("COMMIT")


def run_of(db: ArchiveDB) -> dict[str, Any]:
    """The database's run row (task, seed, config, descriptor_schema...); InspectionError if it has none."""
    run = db.get_run()
    if run is None:
        raise InspectionError(f"{db.path}: no campaign in this database (no run row)")
    return run


def resolve_agent(db: ArchiveDB, spec: str | int) -> int:
    """An agent id from ``spec``: an integer id, or ``best`` (the fittest evaluated agent)."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "best":
            best = db.best_agent()
            if best is None:
                raise InspectionError("no evaluated agent yet, so there is no 'best' agent")
            return int(best["id"])
        if not re.fullmatch(r"\d+", text):
            raise InspectionError(f"agent must be an id (an integer >= 0) or 'best', not {spec!r}")
        spec = int(text)
    if db.conn.execute("SELECT 1 FROM agents WHERE id = ?", (int(spec),)).fetchone() is None:
        last = db.conn.execute("SELECT MAX(id) FROM agents").fetchone()[0]
        raise InspectionError(f"unknown agent id {spec} (this database holds ids 0..{last})")
    return int(spec)


def ids_json(ids: Iterable[int]) -> str:
    """Agent ids as a JSON array, for ``IN (SELECT value FROM json_each(?))``."""
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


# --------------------------------------------------------------------------------------------
# read-only SQL

# Pragmas that only report (a table or index name as argument is allowed for the first group).
_PRAGMAS_WITH_NAME = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                                "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"})
_PRAGMAS_READ = frozenset({"user_version", "schema_version", "application_id", "page_count", "page_size",
                           "freelist_count", "journal_mode", "encoding", "compile_options", "database_list",
                           "function_list", "pragma_list", "table_list", "collation_list", "module_list",
                           "foreign_keys", "data_version", "auto_vacuum", "cache_size", "synchronous",
                           "busy_timeout", "query_only", "max_page_count", "integrity_check", "quick_check"})

_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_ACTION_NAMES = {
    sqlite3.SQLITE_INSERT: "INSERT", sqlite3.SQLITE_UPDATE: "UPDATE", sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_ATTACH: "ATTACH", sqlite3.SQLITE_DETACH: "DETACH", sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_REINDEX: "REINDEX", sqlite3.SQLITE_ANALYZE: "ANALYZE", sqlite3.SQLITE_TRANSACTION: "a transaction",
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT", sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
    sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
}
for _name in dir(sqlite3):  # CREATE_*/DROP_* (tables, indexes, triggers, views, temp or not)
    if _name.startswith(("SQLITE_CREATE_", "SQLITE_DROP_")):
        _ACTION_NAMES.setdefault(getattr(sqlite3, _name), _name[7:].replace("_", " "))

Authorizer = Callable[[int, str | None, str | None, str | None, str | None], int]


def _authorizer(refusals: list[str]) -> Authorizer:
    """A sqlite3 authorizer that allows reading only and notes why it refused anything else.
    It runs while SQLite compiles a statement, so a refused statement never starts."""

    def check(action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None) -> int:
        if action in _ALLOWED:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
                refusals.append("load_extension() is not allowed")
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if arg2 is None and name in _PRAGMAS_READ:
                return sqlite3.SQLITE_OK
            if name in _PRAGMAS_WITH_NAME:
                return sqlite3.SQLITE_OK
            shown = f"PRAGMA {arg1}" + ("" if arg2 is None else f" = {arg2}")
            refusals.append(f"{shown} is not allowed (read-only: only pragmas that report are)")
            return sqlite3.SQLITE_DENY
        what = _ACTION_NAMES.get(action, f"action {action}")
        if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE) and arg1:
            if arg1 in _SCHEMA_TABLES:
                # CREATE and DROP are first checked as a write to the schema table; table-valued
                # pragma functions (pragma_table_info()) also compile to one, so they are refused too
                refusals.append("changing the schema (CREATE, DROP, ALTER) is not allowed (read-only; for table-"
                                "valued pragma functions use the PRAGMA statement, e.g. PRAGMA table_info(agents))")
                return sqlite3.SQLITE_DENY
            what = f"{what} on {arg1}"
        refusals.append(f"{what} is not allowed (read-only)")
        return sqlite3.SQLITE_DENY

    return check


SqlParams = Mapping[str, object] | Sequence[object]


def read_only_query(path: str | os.PathLike[str], sql: str, params: SqlParams | None = None,
                    *, max_rows: int | None = None) -> dict:
    """Run one SQL statement against the database at ``path`` without any way to change it.

    Two locks: the file is opened ``mode=ro`` (SQLite itself refuses writes) and an authorizer
    refuses, before the statement runs, every write, ATTACH/DETACH (VACUUM INTO included), schema
    change, transaction control and any PRAGMA that sets a value. Refusals raise
    :class:`QueryRefused` ("query: refused: ATTACH is not allowed (read-only)").
    Returns ``{"columns": [...], "rows": [[...], ...], "truncated": bool}``.
    """
    p = Path(path)
    if not p.exists():
        raise InspectionError(f"no such database: {p}")
    if not isinstance(sql, str) or not sql.strip():
        raise InspectionError("query: empty SQL statement")
    conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA query_only=ON")
        refusals: list[str] = []
        conn.set_authorizer(_authorizer(refusals))
        try:
            cur = conn.execute(sql, params if params is not None else ())
            rows = cur.fetchmany(max_rows + 1) if max_rows is not None else cur.fetchall()
        except (sqlite3.DatabaseError, sqlite3.ProgrammingError, sqlite3.Warning) as exc:
            if refusals:
                reason = refusals[0]
                if re.match(r"\s*vacuum\b", sql, re.IGNORECASE):  # VACUUM works by attaching a database
                    reason = "VACUUM is not allowed (read-only)"
                raise QueryRefused(f"query: refused: {reason}") from None
            text = str(exc)
            if "one statement at a time" in text:
                raise QueryRefused("query: refused: only one statement per query") from None
            if "readonly" in text or "read-only" in text:
                raise QueryRefused(f"query: refused: the statement would write ({text})") from None
            raise InspectionError(f"query: {text}") from None
        columns = [d[0] for d in cur.description] if cur.description else []
    finally:
        conn.close()
    truncated = max_rows is not None and len(rows) > max_rows
    rows = rows[:max_rows] if truncated else rows
    return {"columns": columns, "rows": [list(r) for r in rows], "truncated": truncated}
