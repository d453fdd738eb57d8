"""Generate archive_db/schema.sql from what the migrations produce."""

from __future__ import annotations

import os
import sqlite3

from .sql import migrations, split_sql

HEADER = """\
-- archive_db schema, version {version} (PRAGMA user_version = {version}).
-- GENERATED from archive_db/migrations/*.sql: documentation only, never executed by the code.
-- Regenerate with:  python -m archive_db.schema > archive_db/schema.sql
"""


def migrated_connection() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for number, _name, script in migrations():
        for statement in split_sql(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    return conn


def dump_schema(path: str | os.PathLike[str] | None = None) -> str:
    conn = sqlite3.connect(path, isolation_level=None) if path is not None else migrated_connection()
    try:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'trigger' THEN 2 ELSE 3 END, "
            "tbl_name = 'agents' DESC, tbl_name, name"
        ).fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    parts = [HEADER.format(version=version)]
    for _type, _name, sql in rows:
        parts.append(sql.strip() + ";\n")
    return "\n".join(parts)
