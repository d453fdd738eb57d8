"""Per-agent lineage counts for a resume, without scanning every agent each time.

A resumed driver needs, for every agent id, how many children it has (``children_counts``) and how many of
them entered a new archive cell (``discovery_counts``). At 10^7 agents the two GROUP BY queries read the
whole table (seconds, and dicts of millions of entries). The ``lineage_snapshot`` row (migration 0009) keeps
both as arrays indexed by agent id, as of a point in the store: children of every agent below ``next_id``,
discoveries of every agent whose ``finish_seq`` is at most ``finish_seq``. :func:`lineage_counts` adds what
came after (ids from ``next_id``: a rowid range; finish_seq above it: an index range) and the discoveries of
agents not finished yet (a few, through the partial status indexes), so its result always equals the two
queries. Agents are never deleted and a finished agent's row never changes (the schema's triggers), so a
snapshot stays true for the rows it counts.
"""

from __future__ import annotations

import sqlite3
import zlib

import numpy as np

Counts = tuple[np.ndarray, np.ndarray]  # (children, discoveries): int64, indexed by agent id

REFRESH_AFTER = 100_000  # rows counted past the snapshot before lineage_counts writes a new one


def _ints(blob: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i8").astype(np.int64)


def _blob(a: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(a, dtype="<i8").tobytes(), 1)


def _add(counts: np.ndarray, parents: list[int]) -> np.ndarray:
    """``counts`` plus one per occurrence of each parent (in place when it is long enough: only the parents'
    entries are touched, not all 10^7)."""
    if not parents:
        return counts
    ids = np.asarray(parents, dtype=np.int64)
    top = int(ids.max()) + 1
    if top > len(counts):
        counts = np.concatenate([counts, np.zeros(top - len(counts), dtype=np.int64)])
    np.add.at(counts, ids, 1)
    return counts


def _grouped(conn: sqlite3.Connection, sql: str, args: tuple) -> np.ndarray:
    rows = conn.execute(sql, args).fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64)
    pairs = np.asarray(rows, dtype=np.int64)
    counts = np.zeros(int(pairs[:, 0].max()) + 1, dtype=np.int64)
    counts[pairs[:, 0]] = pairs[:, 1]
    return counts


def _pending_discoveries(conn: sqlite3.Connection) -> list[int]:
    """Parents of agents that entered a new cell but have no finish_seq yet (not terminal: a few rows)."""
    out: list[int] = []
    for status in ("proposed", "mutated", "evaluated"):  # literal: each through its partial index
        # no term on parent_id: with one, SQLite (no statistics) walks the parent index over every agent
        out += [r[0] for r in conn.execute(
            f"SELECT parent_id FROM agents WHERE status = '{status}' AND archive_event = 'new_cell'")
                if r[0] is not None]
    return out


def lineage_counts(conn: sqlite3.Connection, *, refresh: bool = False) -> Counts:
    """(children, discoveries) per agent id, equal to the ``children_counts`` and ``discovery_counts`` queries.
    With ``refresh`` (a writer's connection, outside a transaction) the snapshot is rewritten when more than
    :data:`REFRESH_AFTER` rows were counted past it, so that the next call reads little."""
    snap = conn.execute("SELECT next_id, finish_seq, children, discoveries FROM lineage_snapshot "
                        "WHERE id = 1").fetchone()
    next_id = int(conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM agents").fetchone()[0])
    seq = int(conn.execute("SELECT COALESCE(MAX(finish_seq), 0) FROM agents WHERE finish_seq IS NOT NULL")
              .fetchone()[0])
    if snap is None:
        children = _grouped(conn, "SELECT parent_id, COUNT(*) FROM agents WHERE parent_id IS NOT NULL AND id < ? "
                                  "GROUP BY parent_id", (next_id,))
        discoveries = _grouped(conn, "SELECT parent_id, COUNT(*) FROM agents WHERE parent_id IS NOT NULL "
                                     "AND archive_event = 'new_cell' AND finish_seq <= ? GROUP BY parent_id", (seq,))
        counted = next_id
    else:
        children, discoveries = _ints(snap[2]), _ints(snap[3])
        new = [r[0] for r in conn.execute(
            "SELECT parent_id FROM agents WHERE id >= ? AND id < ? AND parent_id IS NOT NULL", (snap[0], next_id))]
        found = [r[0] for r in conn.execute(
            "SELECT parent_id FROM agents WHERE finish_seq > ? AND finish_seq <= ? AND archive_event = 'new_cell' "
            "AND parent_id IS NOT NULL", (snap[1], seq))]
        children, discoveries = _add(children, new), _add(discoveries, found)
        counted = (next_id - int(snap[0])) + (seq - int(snap[1]))
    if refresh and counted > REFRESH_AFTER:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT OR REPLACE INTO lineage_snapshot(id, next_id, finish_seq, children, discoveries) "
                         "VALUES (1, ?, ?, ?, ?)", (next_id, seq, _blob(children), _blob(discoveries)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return children, _add(discoveries.copy(), _pending_discoveries(conn))
