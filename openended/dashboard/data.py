"""What the live dashboard draws, read from a campaign database in one snapshot.

:func:`collect` takes an open ``sqlite3`` connection (datasette's read-only ``mode=ro`` one, or any
other) and returns a :class:`Dashboard`: typed records, one per figure, each with a ``note`` that
says in words why it has nothing to draw yet (no stats written, no elite, one descriptor...).
``Dashboard.as_dict()`` is the JSON the page polls (``/-/dashboard.json``); the test reads it too.

Everything is read inside one read transaction, so the figures agree while the campaign writes.
Nothing here writes.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from archive_db.sql import query_text
from openended.dashboard.taskmap import TaskMap, load_task_quietly, task_map

__all__ = ["Dashboard", "FailureRow", "HeatmapData", "LineageStep", "OperatorRow", "Progress", "RunInfo", "Totals",
           "collect", "MAX_POINTS", "MAX_LINEAGE", "VERSION"]

#: Version of the JSON shape (``Dashboard.as_dict()``).
VERSION = 1
#: At most this many points per progress curve (the stats table is thinned evenly, its last row kept).
MAX_POINTS = 600
#: At most this many lineage steps are sent (thinned evenly, the root and the best agent kept).
MAX_LINEAGE = 1000
#: Children per second in the headline: over the stats rows of the last this many seconds.
RATE_WINDOW_S = 30.0


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The campaign: name, task, run status, seed, archive and selection kind, times, target fitness."""

    name: str
    task: str
    status: str
    seed: int
    archive: str
    selection: str
    created_at: float
    updated_at: float
    max_children: int | None
    target_fitness: float | None


@dataclass(frozen=True, slots=True)
class Totals:
    """Headline numbers, counted from the agents and elites tables (not from the last stats row).

    ``children_done`` excludes failed children (as the stats table counts them); ``pending`` is
    proposed or mutated agents; ``children_per_second`` is finished children per second over the
    stats rows of the last :data:`RATE_WINDOW_S` seconds of stats (None with fewer than two rows)."""

    agents: int
    children_done: int
    children_failed: int
    pending: int
    archive_size: int
    best_fitness: float | None
    best_agent: int | None
    children_per_second: float | None
    last_stats_at: float | None


@dataclass(frozen=True, slots=True)
class Progress:
    """The stats table as curves against ``elapsed`` (seconds since its first row), thinned to at
    most :data:`MAX_POINTS` points. ``children_per_second`` is finished (done + failed) children per
    second since the previous point (None for the first). ``rows`` is how many stats rows exist."""

    rows: int
    elapsed: list[float] = field(default_factory=list)
    children_done: list[int] = field(default_factory=list)
    children_failed: list[int] = field(default_factory=list)
    children_in_flight: list[int] = field(default_factory=list)
    archive_size: list[int] = field(default_factory=list)
    coverage: list[float | None] = field(default_factory=list)
    qd_score: list[float | None] = field(default_factory=list)
    best_fitness: list[float | None] = field(default_factory=list)
    mean_fitness: list[float | None] = field(default_factory=list)
    children_per_second: list[float | None] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True, slots=True)
class HeatmapData:
    """The archive on the measurement grid of the first two descriptors (one row with one
    descriptor): ``values[row][col]`` is the best elite fitness in that cell, None where no elite
    falls; ``x_edges``/``y_edges`` the bin edges. ``task_map`` is the task's map (walls, start,
    exit) when the task has one and descriptors are its x, y."""

    x_name: str = ""
    y_name: str = ""
    x_edges: list[float] = field(default_factory=list)
    y_edges: list[float] = field(default_factory=list)
    values: list[list[float | None]] = field(default_factory=list)
    elites: int = 0
    occupied: int = 0
    cells: int = 0
    n_descriptors: int = 0
    best: list[float] | None = None
    task_map: TaskMap | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class LineageStep:
    """One agent on the path from a root to the best agent."""

    id: int
    depth: int
    operator: str
    status: str
    fitness: float | None


@dataclass(frozen=True, slots=True)
class OperatorRow:
    """One row of the ``operator_success`` named query (success_rate = archived / finished)."""

    operator: str
    model: str
    children: int
    finished: int
    archived: int
    failed: int
    success_rate: float | None


@dataclass(frozen=True, slots=True)
class FailureRow:
    """Failed children of one stage and kind. ``kind`` is the evaluation's failure kind (timeout,
    oom, crash...), else the leading word of the reason (``ValueError: ...``), else ``other``."""

    stage: str
    kind: str
    count: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the dashboard page draws; ``notes`` maps a figure to why it is empty."""

    version: int
    generated_at: float
    database: str
    run: RunInfo
    totals: Totals
    progress: Progress
    heatmap: HeatmapData
    lineage: list[LineageStep]
    lineage_length: int
    operators: list[OperatorRow]
    failures: list[FailureRow]
    notes: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (NaN and infinities become None)."""
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


# ---------------------------------------------------------------------------------------------
# the parts


def _run(conn: sqlite3.Connection) -> RunInfo:
    row = conn.execute("SELECT name, task, status, seed, config, descriptor_schema, created_at, updated_at "
                       "FROM runs WHERE id = 1").fetchone()
    if row is None:
        raise LookupError("no campaign in this database (no run row)")
    config, schema = _json(row[4]), _json(row[5])
    budget = config.get("budget") or {}
    target = budget.get("target_fitness")
    if target is None:
        target = _task_target(row[1])
    return RunInfo(name=row[0], task=row[1], status=row[2], seed=int(row[3]),
                   archive=str(schema.get("kind") or (config.get("archive") or {}).get("kind") or "?"),
                   selection=str((config.get("selection") or {}).get("strategy") or "?"),
                   created_at=float(row[6]), updated_at=float(row[7]),
                   max_children=budget.get("max_children"),
                   target_fitness=None if target is None else float(target))


def _task_target(task: str) -> float | None:
    loaded = load_task_quietly(task)
    return None if loaded is None else loaded.fitness_target


def _rate(rows: Sequence[Sequence[Any]]) -> float | None:
    """Finished children per second over the stats rows of the last RATE_WINDOW_S seconds."""
    if len(rows) < 2:
        return None
    last = rows[-1]
    first = next((r for r in rows if r[0] >= last[0] - RATE_WINDOW_S), rows[-2])
    if first is last:
        first = rows[-2]
    dt = last[0] - first[0]
    return max(0.0, ((last[1] + last[2]) - (first[1] + first[2])) / dt) if dt > 0 else None


def _thin(n: int, limit: int) -> list[int]:
    """At most ``limit`` indices of 0..n-1, evenly spread, the first and the last kept."""
    if n <= limit:
        return list(range(n))
    step = (n - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)} | {n - 1})


def _progress(rows: list[tuple]) -> Progress:
    if not rows:
        return Progress(rows=0, note="no stats yet: the campaign writes a stats row every stats_every_seconds")
    keep = _thin(len(rows), MAX_POINTS)
    t0 = rows[0][0]
    kept = [rows[i] for i in keep]
    rate: list[float | None] = [None]
    for prev, cur in zip(kept, kept[1:], strict=False):
        dt = cur[0] - prev[0]
        rate.append(max(0.0, ((cur[1] + cur[2]) - (prev[1] + prev[2])) / dt) if dt > 0 else None)
    return Progress(
        rows=len(rows),
        elapsed=[r[0] - t0 for r in kept],
        children_done=[r[1] for r in kept], children_failed=[r[2] for r in kept],
        children_in_flight=[r[3] for r in kept], archive_size=[r[4] for r in kept],
        coverage=[r[5] for r in kept], qd_score=[r[6] for r in kept],
        best_fitness=[r[7] for r in kept], mean_fitness=[r[8] for r in kept],
        children_per_second=rate,
        note="one stats row so far: the curves need two" if len(rows) == 1 else None,
    )


def _heatmap(conn: sqlite3.Connection, run: RunInfo) -> HeatmapData:
    from openended.qd.measure import measurement_bins, measurement_edges, schema_space

    schema = _json(conn.execute("SELECT descriptor_schema FROM runs WHERE id = 1").fetchone()[0])
    try:
        names = schema_space(schema).names
        edges = measurement_edges(schema)
    except (ValueError, TypeError, KeyError) as exc:
        return HeatmapData(note=f"no descriptor space in this run ({exc})")
    d = len(edges)
    x_edges = [float(v) for v in edges[0]]
    y_edges = [float(v) for v in edges[1]] if d > 1 else [0.0, 1.0]
    nx, ny = len(x_edges) - 1, len(y_edges) - 1
    values: list[list[float | None]] = [[None] * nx for _ in range(ny)]
    elites = conn.execute("SELECT a.fitness, a.descriptors FROM elites e JOIN agents a ON a.id = e.agent_id "
                          "WHERE a.descriptors IS NOT NULL ORDER BY e.cell").fetchall()
    best: list[float] | None = None
    if elites:
        descriptors = json.loads("[" + ",".join(r[1] for r in elites) + "]")
        try:
            bins = measurement_bins(schema, descriptors)
        except (ValueError, TypeError) as exc:
            return HeatmapData(note=f"elites' descriptors do not fit the descriptor space ({exc})")
        top = None
        for (fit, _), b, desc in zip(elites, bins, descriptors, strict=True):
            if fit is None:
                continue
            row, col = (int(b[1]) if d > 1 else 0), int(b[0])
            cur = values[row][col]
            if cur is None or fit > cur:
                values[row][col] = float(fit)
            if top is None or fit > top:
                top, best = fit, [float(desc[0]), float(desc[1]) if d > 1 else 0.5]
    occupied = sum(v is not None for r in values for v in r)
    note = None
    if not elites:
        note = "no elite in the archive yet"
    elif d == 1:
        note = f"one descriptor ({names[0]}): the archive is drawn as a single row"
    elif d > 2:
        note = f"{d} descriptors: projected on {names[0]}, {names[1]} (each cell shows the best over the others)"
    tmap = task_map(run.task) if d >= 2 and tuple(names[:2]) == ("x", "y") else None
    return HeatmapData(x_name=names[0], y_name=names[1] if d > 1 else "", x_edges=x_edges, y_edges=y_edges,
                       values=values, elites=len(elites), occupied=occupied, cells=nx * ny, n_descriptors=d,
                       best=best, task_map=tmap, note=note)


def _lineage(conn: sqlite3.Connection) -> tuple[list[LineageStep], int]:
    cur = conn.execute(query_text("best_lineage"))
    rows = cur.fetchall()
    if not rows:
        return [], 0
    at = {c[0]: i for i, c in enumerate(cur.description)}
    steps = [LineageStep(id=int(r[at["id"]]), depth=int(r[at["depth"]]), operator=str(r[at["operator"]]),
                         status=str(r[at["status"]]), fitness=r[at["fitness"]]) for r in rows]
    return [steps[i] for i in _thin(len(steps), MAX_LINEAGE)], len(steps)


def _operators(conn: sqlite3.Connection) -> list[OperatorRow]:
    cur = conn.execute(query_text("operator_success"))
    cols = [c[0] for c in cur.description]
    out = []
    for r in cur.fetchall():
        row: Mapping[str, Any] = dict(zip(cols, r, strict=True))
        out.append(OperatorRow(operator=str(row["operator"]), model=str(row["model"]),
                               children=int(row["children"] or 0), finished=int(row["finished"] or 0),
                               archived=int(row["archived"] or 0), failed=int(row["failed"] or 0),
                               success_rate=row["success_rate"]))
    return out


_FAILURES_SQL = """
SELECT a.fail_stage,
       (SELECT e.failure_kind FROM evaluations e
        WHERE e.agent_id = a.id AND e.failure_kind IS NOT NULL ORDER BY e.id DESC LIMIT 1) AS kind,
       a.fail_reason
FROM agents a
WHERE a.status = 'failed'
"""


def _failure_kind(kind: str | None, reason: str | None) -> str:
    if kind:
        return kind
    head = (reason or "").split(":", 1)[0].strip()
    if head and head != (reason or "").strip() and len(head) <= 40 and head.replace("_", "").isalnum():
        return head
    return "other"


def _failures(conn: sqlite3.Connection) -> list[FailureRow]:
    counts: dict[tuple[str, str], int] = {}
    for stage, kind, reason in conn.execute(_FAILURES_SQL):
        key = (str(stage or "?"), _failure_kind(kind, reason))
        counts[key] = counts.get(key, 0) + 1
    return [FailureRow(stage=s, kind=k, count=n)
            for (s, k), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _totals(conn: sqlite3.Connection, stats: list[tuple]) -> Totals:
    agents, done, failed, pending = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(status IN ('evaluated', 'archived', 'rejected')), 0), "
        "COALESCE(SUM(status = 'failed'), 0), COALESCE(SUM(status IN ('proposed', 'mutated')), 0) FROM agents"
    ).fetchone()
    archive_size = conn.execute("SELECT COUNT(*) FROM elites").fetchone()[0]
    best = conn.execute("SELECT id, fitness FROM agents WHERE +status IN ('evaluated', 'archived', 'rejected') "
                        "AND fitness IS NOT NULL ORDER BY fitness DESC, id LIMIT 1").fetchone()
    return Totals(agents=agents, children_done=done, children_failed=failed, pending=pending,
                  archive_size=archive_size, best_fitness=None if best is None else best[1],
                  best_agent=None if best is None else best[0],
                  children_per_second=_rate(stats[-MAX_POINTS:]),
                  last_stats_at=stats[-1][0] if stats else None)


# ---------------------------------------------------------------------------------------------
# everything, in one snapshot

_STATS_SQL = ("SELECT at, children_done, children_failed, children_in_flight, archive_size, coverage, qd_score, "
              "best_fitness, mean_fitness FROM stats ORDER BY at, id")


def collect(conn: sqlite3.Connection, database: str = "") -> Dashboard:
    """The dashboard's data from ``conn`` (read in one read transaction; nothing is written).
    LookupError when the database holds no campaign."""
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")
    try:
        run = _run(conn)
        stats = conn.execute(_STATS_SQL).fetchall()
        totals = _totals(conn, stats)
        progress = _progress(stats)
        heatmap = _heatmap(conn, run)
        lineage, length = _lineage(conn)
        operators = _operators(conn)
        failures = _failures(conn)
    finally:
        if began and conn.in_transaction:
            conn.execute("COMMIT")
    notes = {}
    if progress.note:
        notes["progress"] = progress.note
    if heatmap.note and not heatmap.elites:
        notes["heatmap"] = heatmap.note
    if not lineage:
        notes["lineage"] = "no evaluated agent yet"
    if not operators:
        notes["operators"] = "no children yet (roots are not counted)"
    if not failures:
        notes["failures"] = "no failed children"
    return Dashboard(version=VERSION, generated_at=time.time(), database=database, run=run, totals=totals,
                     progress=progress, heatmap=heatmap, lineage=lineage, lineage_length=length,
                     operators=operators, failures=failures, notes=notes)
