"""Reading a campaign: agents, lineages, counts and the named queries of ``queries/*.sql``.

:class:`Reads` is the read half of :class:`~archive_db.ArchiveDB`; it only needs the connection.
Every read returns plain dicts (JSON columns decoded) or numbers, never a cursor; a lineage,
which may be 10,000 rows long, comes as :class:`Ancestor` tuples instead.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import sqlite3
import warnings
from typing import Any, NamedTuple

import numpy as np

from .errors import ArchiveDBError, InvalidValueError, UnknownAgentError
from .records import STATUSES, as_int
from .sql import AGENT_JSON, dict_rows, gc_paused, query_names, query_text, typed_rows


class Ancestor(NamedTuple):
    """One step of :meth:`Reads.ancestors`: the columns of ``queries/ancestors.sql``, in order
    (``ArchiveDB.agent(id)`` has the full row). A tuple, not a dict: a 10,000-deep lineage builds
    10,000 of them."""

    id: int
    parent_id: int | None
    parent2_id: int | None
    depth: int
    status: str
    operator: str
    fitness: float | None
    novelty: float | None
    cell: int | None
    archive_event: str | None


# Ancestors per row of the walk's result: sqlite3 spends about a third of a microsecond per row it
# hands to Python besides its cells, so a 10,000-deep lineage comes back as 625 rows of 16 ancestors.
ANCESTORS_PER_ROW = 16


@functools.cache
def _ancestors_wide(per_row: int = ANCESTORS_PER_ROW) -> str:
    """``queries/ancestors.sql``'s walk from the same agent, ``per_row`` generations a step: each row
    holds the :class:`Ancestor` columns of ``per_row`` consecutive ancestors, the agent first and each
    parent after its child, the last row padded with NULLs past the root. No sort (10,000 rows sorted
    by id took a fifth of the query's SQLite time; reversing the list in Python costs microseconds).
    The named query keeps its one-row-per-ancestor shape and ORDER BY for the CLI and sqlite3 users;
    the agent it starts from (``:agent_id``, or the fittest) is read from it."""
    text = query_text("ancestors")
    m = re.search(r"WITH RECURSIVE chain\(id, parent_id\) AS \(\s*SELECT id, parent_id FROM agents\s+"
                  r"WHERE id = (.+?)\s+UNION ALL\s", text, re.S)
    if not m or not text.rstrip().endswith("ORDER BY a.id;"):
        raise ArchiveDBError("queries/ancestors.sql no longer has the walk ArchiveDB.ancestors repeats")
    start = m.group(1)
    k = range(per_row)
    gens = ", ".join([f"g{j}.id" for j in k] + [f"g{per_row - 1}.parent_id"])
    walk = " ".join(f"LEFT JOIN agents AS g{j} ON g{j}.id = g{j - 1}.parent_id" for j in k if j)
    cols = ", ".join(f"a{j}.{c}" for j in k for c in Ancestor._fields)
    rows = " ".join(f"LEFT JOIN agents AS a{j} ON a{j}.id = chain.id{j}" for j in k if j)
    return (f"WITH RECURSIVE chain({', '.join(f'id{j}' for j in k)}, next) AS (\n"
            f"    SELECT {gens} FROM agents AS g0 {walk}\n    WHERE g0.id = {start}\n"
            f"    UNION ALL\n"
            f"    SELECT {gens} FROM chain CROSS JOIN agents AS g0 ON g0.id = chain.next {walk}\n)\n"
            f"SELECT {cols}\nFROM chain CROSS JOIN agents AS a0 ON a0.id = chain.id0 {rows}")


class Reads:
    """Reads of the lineage tree, the archive occupancy and the progress snapshots."""

    conn: sqlite3.Connection

    def _agent_field(self, agent_id: int, column: str) -> Any:
        row = self.conn.execute(f"SELECT {column} FROM agents WHERE id = ?", (agent_id,)).fetchone()
        if row is None:
            raise UnknownAgentError(f"unknown agent id {agent_id}")
        return row[0]

    def _count(self, sql: str) -> int:
        value: int = self.conn.execute(sql).fetchone()[0]
        return value

    # ---- agents -------------------------------------------------------------------------

    def agent(self, agent_id: int) -> dict[str, Any]:
        rows = dict_rows(self.conn.execute("SELECT * FROM agents WHERE id = ?", (agent_id,)))
        if not rows:
            raise UnknownAgentError(f"unknown agent id {agent_id}")
        return rows[0]

    def next_agent_id(self) -> int:
        return self._count("SELECT COALESCE(MAX(id) + 1, 0) FROM agents")

    def counts(self) -> dict[str, int]:
        """Agents by status (from ``agent_totals``, kept by triggers: a few rows at any size)."""
        out = dict.fromkeys(STATUSES, 0)
        out.update(self.conn.execute("SELECT status, SUM(agents) FROM agent_totals GROUP BY status").fetchall())
        return out

    def duplicate_count(self) -> int:
        """Agents that are duplicates of an earlier agent's genome (``duplicate_of`` set)."""
        return self._count("SELECT COALESCE(SUM(duplicates), 0) FROM agent_totals")

    def progress_counts(self, counts: dict[str, int] | None = None) -> dict[str, int]:
        """done (evaluated, archived or rejected), failed, and pending (proposed or mutated: left for resume)."""
        c = self.counts() if counts is None else counts
        return {"done": c["evaluated"] + c["archived"] + c["rejected"], "failed": c["failed"],
                "pending": c["proposed"] + c["mutated"]}

    def finished_from(self, first_id: int) -> set[int]:
        """Ids from ``first_id`` on whose row is terminal (neither proposed nor mutated)."""
        return {row[0] for row in self.conn.execute(
            "SELECT id FROM agents WHERE id >= ? AND status NOT IN ('proposed', 'mutated')", (first_id,))}

    def agents_by_status(self, status: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Agents in ``status``, by id, at most ``limit``: through the status's partial index (migration 0007),
        which SQLite uses only for the status written into the query, never for a bound parameter."""
        if status not in STATUSES:
            raise InvalidValueError(f"status must be one of {STATUSES}, not {status!r}")
        sql = f"SELECT * FROM agents WHERE status = '{status}' ORDER BY id LIMIT ?"  # status: one of STATUSES
        return dict_rows(self.conn.execute(sql, (-1 if limit is None else int(limit),)), AGENT_JSON)

    # ---- named queries ------------------------------------------------------------------

    def query_names(self) -> list[str]:
        return query_names()

    def named_query(self, name: str, **params: object) -> list[dict[str, Any]]:
        """Run ``archive_db/queries/<name>.sql`` with named parameters; JSON columns decoded."""
        sql = query_text(name)
        try:
            return dict_rows(self.conn.execute(sql, params), AGENT_JSON + ("result", "extra"))
        except sqlite3.ProgrammingError as exc:
            raise InvalidValueError(f"named query {name!r}: {exc}") from None

    # ---- lineage ------------------------------------------------------------------------

    def ancestors(self, agent_id: int) -> list[Ancestor]:
        """Root first, the agent itself last; ``step.id``, ``step.fitness``, ... (see :class:`Ancestor`)."""
        try:
            cursor = self.conn.execute(_ancestors_wide(), {"agent_id": agent_id})
        except sqlite3.ProgrammingError as exc:
            raise InvalidValueError(f"ancestors({agent_id!r}): {exc}") from None
        rows = typed_rows(cursor, Ancestor, per_row=ANCESTORS_PER_ROW)
        while rows and rows[-1].id is None:  # the last row's padding past the root
            rows.pop()
        if not rows:
            raise UnknownAgentError(f"unknown agent id {agent_id}")
        # The walk yields the agent first and each parent after its child; a root ends it. Anything
        # else would mean SQLite yielded the chain out of order: an error, never a shuffled lineage.
        if rows[-1].parent_id is not None or (isinstance(agent_id, int) and rows[0].id != agent_id):
            raise ArchiveDBError(f"ancestors({agent_id!r}): the chain came back out of order")
        rows.reverse()
        return rows

    def descendants(self, agent_id: int) -> list[dict[str, Any]]:
        """Every agent below ``agent_id`` (itself excluded), by depth then id."""
        self._agent_field(agent_id, "id")
        return self.named_query("descendants", agent_id=agent_id)

    def children_counts(self) -> dict[int, int]:
        return dict(self.conn.execute(query_text("children_counts")).fetchall())

    def discovery_counts(self) -> dict[int, int]:
        """Per parent: how many of its children entered a new archive cell."""
        return dict(self.conn.execute(query_text("discovery_counts")).fetchall())

    def genome_firsts(self) -> dict[str, int]:
        """Each genome hash -> the agent whose result stands for it: one already evaluated if any
        (the first such), else the first still waiting for evaluation; duplicates never."""
        firsts: dict[str, int] = {}
        for genome, agent_id in self.conn.execute(
                "SELECT genome_hash, id FROM agents WHERE genome_hash IS NOT NULL AND duplicate_of IS NULL "
                "ORDER BY status = 'mutated', id"):
            firsts.setdefault(genome, agent_id)
        return firsts

    def last_mutation_errors(self) -> dict[int, str]:
        """Each parent -> the reason its most recent child failed at mutation (fed into the next prompt)."""
        return dict(self.conn.execute(
            "SELECT parent_id, fail_reason FROM agents WHERE fail_stage = 'mutation' AND parent_id IS NOT NULL "
            "ORDER BY id"))

    # ---- the best -----------------------------------------------------------------------

    def best_agent(self) -> dict[str, Any] | None:
        rows = self.named_query("top_by_fitness", k=1)
        return rows[0] if rows else None

    def best_lineage(self) -> list[dict[str, Any]]:
        return self.named_query("best_lineage")

    def stepping_stones(self) -> list[dict[str, Any]]:
        return self.named_query("stepping_stones")

    def top_k(self, k: int = 10, by: str = "fitness") -> list[dict[str, Any]]:
        if by not in ("fitness", "novelty"):
            raise InvalidValueError(f"top_k(by=...) must be 'fitness' or 'novelty', not {by!r}")
        return self.named_query(f"top_by_{by}", k=as_int(k, "k"))

    # ---- totals, elites, stats, evaluations ---------------------------------------------

    def usage_totals(self) -> dict[str, float]:
        """Tokens and cost spent by every child so far (the foundation-model budgets)."""
        tokens, cost = self.conn.execute(
            "SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(cost), 0.0) FROM agent_totals").fetchone()
        return {"tokens": int(tokens), "cost": float(cost)}

    def elites(self) -> list[dict[str, Any]]:
        return dict_rows(self.conn.execute(
            "SELECT e.cell, e.agent_id, a.fitness, a.descriptors, a.novelty FROM elites e "
            "JOIN agents a ON a.id = e.agent_id ORDER BY e.cell"
        ))

    def elite_arrays(self, chunk: int = 100_000) -> dict[str, np.ndarray]:
        """The elites of :meth:`elites` as aligned columns ordered by cell: ``cell``, ``agent_id`` (int64),
        ``fitness``, ``novelty`` (float64, NaN where NULL) and ``descriptors`` (n, d) float64, what
        ``Archive.restore`` takes. No dict per elite: a default archive keeps every child, and at 10^7
        members the dicts alone took seconds and gigabytes. Descriptors are parsed from their JSON text
        in C (``np.fromstring``: correctly rounded, so the same floats as ``json.loads``), a chunk at a time."""
        cursor = self.conn.execute(
            "SELECT e.cell, e.agent_id, a.fitness, a.novelty, a.descriptors FROM elites e "
            "JOIN agents a ON a.id = e.agent_id ORDER BY e.cell")
        parts: list[tuple[np.ndarray, ...]] = []
        with gc_paused():
            while rows := cursor.fetchmany(chunk):
                cells, ids, fitness, novelty, texts = zip(*rows, strict=True)
                numbers = np.array([cells, ids], dtype=np.int64)
                floats = np.array([fitness, novelty], dtype=np.float64)  # None becomes NaN
                parts.append((numbers[0], numbers[1], floats[0], floats[1], _descriptor_rows(texts)))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return {"cell": empty, "agent_id": empty, "fitness": np.zeros(0), "novelty": np.zeros(0),
                    "descriptors": np.zeros((0, 0))}
        names = ("cell", "agent_id", "fitness", "novelty", "descriptors")
        return {name: np.concatenate([part[i] for part in parts]) for i, name in enumerate(names)}

    def elite_count(self) -> int:
        return self._count("SELECT COALESCE(MAX(elites), 0) FROM elite_totals")

    def stats_history(self) -> list[dict[str, Any]]:
        return dict_rows(self.conn.execute("SELECT * FROM stats ORDER BY at, id"), ("extra",))

    def latest_stats(self) -> dict[str, Any] | None:
        """The most recent stats snapshot, or None before the first."""
        rows = dict_rows(self.conn.execute("SELECT * FROM stats ORDER BY id DESC LIMIT 1"), ("extra",))
        return rows[0] if rows else None

    def evaluations(self, agent_id: int) -> list[dict[str, Any]]:
        return dict_rows(self.conn.execute("SELECT * FROM evaluations WHERE agent_id = ? ORDER BY id", (agent_id,)),
                         ("result",))

    def transcripts(self, agent_id: int) -> list[dict[str, Any]]:
        """The agent's use of the model gateway, one dict per evaluation that had it (``entries`` decoded)."""
        return dict_rows(self.conn.execute("SELECT * FROM transcripts WHERE agent_id = ? ORDER BY id", (agent_id,)),
                         ("entries",))


def _descriptor_rows(texts: tuple[str, ...]) -> np.ndarray:
    """JSON arrays of numbers, all of one length, as a float array (n, d); json.loads where they are not
    plain flat arrays of numbers (np.fromstring would stop at the first thing it cannot read)."""
    commas = set(map(operator.methodcaller("count", ","), texts))  # one length for all (no row split across two)
    joined = ",".join(texts)
    if len(commas) == 1 and joined.count("[") == joined.count("]") == len(texts) and "[]" not in joined:
        d = commas.pop() + 1
        try:
            with warnings.catch_warnings():  # text it cannot read: older numpy warns and stops, newer raises
                warnings.simplefilter("ignore", DeprecationWarning)
                flat = np.fromstring(joined.replace("[", "").replace("]", ""), sep=",")
        except ValueError:
            flat = np.zeros(0)
        if flat.size == d * len(texts):
            return flat.reshape(len(texts), d)
    try:
        return np.asarray(json.loads("[" + ",".join(texts) + "]"), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArchiveDBError(f"elite descriptors are not arrays of numbers of one length: {exc}") from None

