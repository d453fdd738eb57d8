"""Migrations 0007 and 0008: the status index becomes one partial index per status that is looked up, the
unused indexes on agents.cell and on the genome hash's prefix go; a version-6 database with agents upgrades
and reads the same."""

from __future__ import annotations

import sqlite3

from archive_db import STATUSES, ArchiveDB

AGENTS = [(0, None, "archived"), (1, 0, "rejected"), (2, 0, "failed"), (3, 1, "proposed"), (4, 1, "mutated"),
          (5, 3, "proposed"), (6, 2, "evaluated")]


def add_agents(con: sqlite3.Connection) -> None:
    """The agents of ``AGENTS`` in a version-6 schema; closes ``con``."""
    for aid, parent, status in AGENTS:
        done = status not in ("proposed", "failed")
        con.execute("INSERT INTO agents(id, parent_id, operator, seed, created_at, status, genome_hash, fitness, "
                    "descriptors, cell, fail_stage, fail_reason) VALUES (?, ?, 'gaussian', ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                    (aid, parent, aid, status, "h" if done else None,
                     1.0 if done and status != "mutated" else None,
                     "[0.5]" if done and status != "mutated" else None, aid if status == "archived" else None,
                     "sandbox" if status == "failed" else None, "died" if status == "failed" else None))
    con.close()


def indexes(db: ArchiveDB) -> set[str]:
    sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'agents'"
    return {r[0] for r in db.conn.execute(sql)}


def test_a_version_6_database_upgrades_to_partial_status_indexes(tmp_path, database_at):
    path = tmp_path / "old.db"
    add_agents(database_at(path, 6))
    with ArchiveDB(path) as db:
        assert db.schema_version >= 7
        names = indexes(db)
        assert not {"idx_agents_status", "idx_agents_cell", "idx_agents_genome_prefix"} & names
        assert {"idx_agents_proposed", "idx_agents_mutated", "idx_agents_evaluated", "idx_agents_failed"} <= names
        for status in STATUSES:
            assert [r["id"] for r in db.agents_by_status(status)] == [a for a, _, s in AGENTS if s == status]
        assert [r["id"] for r in db.agents_by_status("proposed", limit=1)] == [3]
        assert db.progress_counts() == {"done": 3, "failed": 1, "pending": 3}
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_pending_and_failed_agents_are_found_through_their_partial_index(tmp_path, database_at):
    path = tmp_path / "old.db"
    add_agents(database_at(path, 6))
    with ArchiveDB(path) as db:
        for status in ("proposed", "mutated", "evaluated", "failed"):
            plan = db.conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM agents WHERE status = '{status}' "
                                   "ORDER BY id").fetchall()
            assert any(f"idx_agents_{status}" in str(step) for step in plan), plan
