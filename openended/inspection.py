"""Read-only views of a campaign database: what the inspection commands, plots and benchmarks show.

Every function takes an open read-only :class:`~archive_db.ArchiveDB` (see :func:`open_db`) or a
path, and never writes. Each view reads one snapshot (a read transaction), so its numbers agree
with each other even while the campaign driver keeps writing (WAL mode lets readers and the writer
work at the same time).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np

from archive_db import ArchiveDB, ArchiveDBError

__all__ = [
    "InspectionError",
    "QueryRefused",
    "Heatmap",
    "open_db",
    "snapshot",
    "resolve_agent",
    "top",
    "show",
    "lineage",
    "diff",
    "tree",
    "format_tree",
    "read_only_query",
    "export",
    "progress_curve",
    "heatmap",
    "success_rates",
    "campaign_metrics",
    "compare",
]

class InspectionError(ValueError):
    """Bad input to an inspection view (unknown agent, missing database, bad option...)."""


class QueryRefused(InspectionError):
    """``query`` refused a statement that would write, attach or change a pragma."""


# --------------------------------------------------------------------------------------------
# opening


@contextlib.contextmanager
def open_db(path: str | os.PathLike) -> Iterator[ArchiveDB]:
    """The campaign database at ``path``, read-only; InspectionError if it is missing or holds no run."""
    p = Path(path)
    if not p.exists():
        raise InspectionError(f"no such database: {p}")
    try:
        db = ArchiveDB(p, readonly=True)
    except ArchiveDBError as exc:
        raise InspectionError(str(exc)) from None
    try:
        if db.get_run() is None:
            raise InspectionError(f"{p}: no campaign in this database (no run row)")
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


def _ids_json(ids) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


# --------------------------------------------------------------------------------------------
# top, show, lineage, diff

_TOP_COLUMNS = ("id", "parent_id", "depth", "status", "operator", "model", "fitness", "novelty", "cell",
                "archive_event", "descriptors")


def top(db: ArchiveDB, k: int = 10, by: str = "fitness") -> list[dict]:
    """The ``k`` best evaluated agents by ``fitness`` or ``novelty`` (ties: lowest id first)."""
    if by not in ("fitness", "novelty"):
        raise InspectionError(f"--by must be 'fitness' or 'novelty', not {by!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InspectionError(f"-k must be an integer >= 1, not {k!r}")
    rows = db.top_k(k, by)
    elite_ids = _elite_ids(db, [r["id"] for r in rows])
    return [{**{c: r[c] for c in _TOP_COLUMNS}, "elite": r["id"] in elite_ids} for r in rows]


def _elite_ids(db: ArchiveDB, ids: Sequence[int]) -> set[int]:
    return {r[0] for r in db.conn.execute(
        "SELECT agent_id FROM elites WHERE agent_id IN (SELECT value FROM json_each(?))", (_ids_json(ids),))}


def _file_entry(path: str, data: bytes, contents: bool, max_text_bytes: int) -> dict:
    entry: dict[str, Any] = {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if path.endswith(".npy"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception:  # a file named .npy that is not one: show it as binary
            arr = None
        if arr is not None:
            entry["kind"] = "npy"
            entry["shape"] = list(arr.shape)
            entry["dtype"] = str(arr.dtype)
            if contents:
                entry["values"] = arr.ravel().tolist()
            return entry
    try:
        text = data.decode("utf-8") if b"\x00" not in data else None
    except UnicodeDecodeError:
        text = None
    entry["kind"] = "text" if text is not None else "binary"
    if contents and text is not None:
        entry["text"] = text if len(data) <= max_text_bytes else text[:max_text_bytes]
        entry["truncated"] = len(data) > max_text_bytes
    return entry


def show(db: ArchiveDB, agent_id: int, *, contents: bool = False, max_text_bytes: int = 65536) -> dict:
    """Everything about one agent: its row, evaluations, feedback, children and files.

    ``files`` lists path, bytes, sha256 and kind (text | npy | binary) of each file; with
    ``contents`` also the text (cut at ``max_text_bytes``) or the array values of ``.npy`` files.
    """
    with snapshot(db):
        agent = db.agent(agent_id)
        evaluations = db.evaluations(agent_id)
        files = db.agent_files(agent_id)
        children = db.conn.execute("SELECT COUNT(*) FROM agents WHERE parent_id = ?", (agent_id,)).fetchone()[0]
        elite_cell = db.conn.execute("SELECT cell FROM elites WHERE agent_id = ?", (agent_id,)).fetchone()
    return {
        "agent": agent,
        "elite": elite_cell is not None,
        "children": children,
        "feedback": agent.get("feedback"),
        "evaluations": evaluations,
        "files": [_file_entry(p, data, contents, max_text_bytes) for p, data in files.items()],
    }


def lineage(db: ArchiveDB, agent_id: int) -> list[dict]:
    """Root first, ``agent_id`` last: each step's id, parent, operator, model, status, fitness,
    change in fitness from its parent (``delta_fitness``), cell and archive event."""
    with snapshot(db):
        steps = db.ancestors(agent_id)
        extra = dict(db.conn.execute(
            "SELECT id, model FROM agents WHERE id IN (SELECT value FROM json_each(?))",
            (_ids_json(s["id"] for s in steps),)).fetchall())
    out, prev = [], None
    for s in steps:
        delta = None
        if prev is not None and s["fitness"] is not None and prev["fitness"] is not None:
            delta = s["fitness"] - prev["fitness"]
        out.append({"id": s["id"], "parent_id": s["parent_id"], "depth": s["depth"], "operator": s["operator"],
                    "model": extra.get(s["id"]), "status": s["status"], "fitness": s["fitness"],
                    "delta_fitness": delta, "novelty": s["novelty"], "cell": s["cell"],
                    "archive_event": s["archive_event"]})
        prev = s
    return out


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_HEADER = re.compile(r"^(?:---|\+\+\+) (?:a/|b/)?(.*?)\t\(")
_BINARY = re.compile(r"^Binary files (?:a/)?(.*?) and (?:b/)?(.*?) differ$")


def _diff_files(text: str) -> list[dict]:
    """Per file of a unified diff: path and lines added/removed. Hunk line counts say where a
    hunk ends, so a content line such as ``--- x`` is never taken for a file header."""
    files: list[dict] = []
    old_left = new_left = 0
    for line in text.splitlines():
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag == "-":
                files[-1]["removed"] += 1
                old_left -= 1
            elif tag == "+":
                files[-1]["added"] += 1
                new_left -= 1
            elif tag == " ":
                old_left -= 1
                new_left -= 1
            continue  # "\\ No newline at end of file" counts for neither side
        if line.startswith("@@"):
            m = _HUNK.match(line)
            if m:
                old_left = 1 if m.group(1) is None else int(m.group(1))
                new_left = 1 if m.group(2) is None else int(m.group(2))
        elif line.startswith("--- "):
            m = _HEADER.match(line)
            files.append({"path": m.group(1) if m else line[4:], "added": 0, "removed": 0, "binary": False})
        elif line.startswith("+++ ") and files:
            m = _HEADER.match(line)
            if m and m.group(1) != "/dev/null":
                files[-1]["path"] = m.group(1)
        elif line.startswith("Binary files "):
            m = _BINARY.match(line)
            path = line if m is None else (m.group(2) if m.group(2) != "/dev/null" else m.group(1))
            files.append({"path": path, "added": None, "removed": None, "binary": True})
    return files


def diff(db: ArchiveDB, a: int, b: int | None = None) -> dict:
    """Unified diff from ``a`` to ``b``; with ``b`` None from ``a``'s parent to ``a`` (a root
    against an empty tree). Returns ``{"from", "to", "text", "files": [{"path", "added", "removed",
    "binary"}]}`` (``from`` is None for a root)."""
    with snapshot(db):
        if b is None:
            old, new = db.agent(a)["parent_id"], a
        else:
            old, new = a, b
        text = db.diff(a, b)
    return {"from": old, "to": new, "text": text, "files": _diff_files(text)}


# --------------------------------------------------------------------------------------------
# tree


def tree(db: ArchiveDB, *, max_nodes: int = 200, show_all: bool = False) -> dict:
    """The lineage tree (forest: one tree per root), pruned for big runs.

    Without ``show_all``, when the campaign holds more than ``max_nodes`` agents the tree keeps
    the branches that matter: the best agent's lineage first, then the paths from a root to the
    current elites (fittest first), then to other archived agents, while they fit in ``max_nodes``.
    Each node says how many of its children were left out (``hidden_children``).
    """
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise InspectionError(f"--max-nodes must be an integer >= 1, not {max_nodes!r}")
    conn = db.conn
    with snapshot(db):
        parent = dict(conn.execute("SELECT id, parent_id FROM agents").fetchall())
        total = len(parent)
        best = db.best_agent()
        best_path: list[int] = []
        node = None if best is None else best["id"]
        while node is not None:
            best_path.append(node)
            node = parent[node]
        elites = {r[0] for r in conn.execute("SELECT agent_id FROM elites")}
        pruned = not show_all and total > max_nodes
        if not pruned:
            keep = set(parent)
        else:
            keep = set(best_path)

            def add_paths(sql: str) -> bool:
                """Add root-to-agent paths in the query's order; False once one does not fit."""
                for (aid,) in conn.execute(sql):
                    fragment, n = [], aid
                    while n is not None and n not in keep:
                        fragment.append(n)
                        n = parent[n]
                    if len(keep) + len(fragment) > max_nodes:
                        return False
                    keep.update(fragment)
                return True

            if add_paths("SELECT agent_id FROM elites ORDER BY fitness DESC, agent_id"):
                # +status: walk the fitness index and stop early, instead of sorting every archived agent
                add_paths("SELECT id FROM agents WHERE +status = 'archived' ORDER BY fitness DESC, id")
        rows = conn.execute(
            "SELECT id, parent_id, depth, status, operator, model, fitness, cell, archive_event FROM agents "
            + ("" if not pruned else "WHERE id IN (SELECT value FROM json_each(?)) ") + "ORDER BY id",
            (_ids_json(keep),) if pruned else (),
        ).fetchall()
    children = Counter(p for p in parent.values() if p is not None)
    shown_children = Counter(r[1] for r in rows if r[1] is not None)
    on_best = set(best_path)
    nodes = [
        {"id": r[0], "parent_id": r[1], "depth": r[2], "status": r[3], "operator": r[4], "model": r[5],
         "fitness": r[6], "cell": r[7], "archive_event": r[8], "elite": r[0] in elites,
         "best_lineage": r[0] in on_best, "hidden_children": children[r[0]] - shown_children[r[0]]}
        for r in rows
    ]
    return {"total": total, "shown": len(nodes), "pruned": pruned, "best_agent": None if best is None else best["id"],
            "roots": [n["id"] for n in nodes if n["parent_id"] is None], "nodes": nodes}


def _label(n: dict, best_agent: int | None) -> str:
    fit = "-" if n["fitness"] is None else f"{n['fitness']:.4g}"
    op = n["operator"] if not n["model"] else f"{n['operator']}/{n['model']}"
    parts = [f"#{n['id']}", op, f"fitness {fit}", n["status"]]
    if n["elite"]:
        parts.append(f"elite cell {n['cell']}")
    if n["id"] == best_agent:
        parts.append("<- best")
    elif n["best_lineage"]:
        parts.append("*")
    if n["hidden_children"]:
        parts.append(f"(+{n['hidden_children']} hidden)")
    return " ".join(parts)


def format_tree(t: dict) -> str:
    """The tree from :func:`tree` as text. Branches indent with ``├─``/``└─``; an agent's only
    shown child is printed right below it at the same indent, so long chains stay narrow.
    ``*`` marks the best agent's lineage."""
    kids: dict[int | None, list[int]] = {}
    by_id = {n["id"]: n for n in t["nodes"]}
    for n in t["nodes"]:
        kids.setdefault(n["parent_id"], []).append(n["id"])
    if not t["nodes"]:
        return "(no agents yet)"
    lines: list[str] = []
    if t["pruned"]:
        lines.append(f"(showing {t['shown']} of {t['total']} agents: the best lineage and branches to archived "
                     "agents; --all shows every agent)")
    roots = kids.get(None, [])
    # (node, prefix of its own line, prefix of its descendants' lines); several roots hang off a
    # virtual top so that a root's only child (same indent) cannot be mistaken for the next root
    if len(roots) > 1:
        stack = [(r, ("└─ " if i == len(roots) - 1 else "├─ "), ("   " if i == len(roots) - 1 else "│  "))
                 for i, r in enumerate(roots)][::-1]
    else:
        stack = [(r, "", "") for r in roots]
    while stack:  # iterative: lineages can be 10,000 deep
        nid, line_prefix, desc_prefix = stack.pop()
        lines.append(line_prefix + _label(by_id[nid], t["best_agent"]))
        below = kids.get(nid, [])
        if len(below) == 1:
            stack.append((below[0], desc_prefix, desc_prefix))
            continue
        for i in range(len(below) - 1, -1, -1):
            last = i == len(below) - 1
            stack.append((below[i], desc_prefix + ("└─ " if last else "├─ "), desc_prefix + ("   " if last else "│  ")))
    return "\n".join(lines)


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


def _authorizer(refusals: list[str]):
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
                refusals.append("changing the schema (CREATE, DROP, ALTER) is not allowed (read-only; "
                                "for table-valued pragma functions use the PRAGMA statement, e.g. PRAGMA table_info(agents))")
                return sqlite3.SQLITE_DENY
            what = f"{what} on {arg1}"
        refusals.append(f"{what} is not allowed (read-only)")
        return sqlite3.SQLITE_DENY

    return check


def read_only_query(path: str | os.PathLike, sql: str, params: dict | Sequence | None = None,
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


# --------------------------------------------------------------------------------------------
# export


def export(db: ArchiveDB, agent_id: int, out_dir: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write the agent's files under ``out_dir`` (created if needed); returns the paths written.
    Refuses paths that would land outside ``out_dir`` and existing files unless ``overwrite``."""
    files = db.agent_files(agent_id)
    if not files:
        status = db.agent(agent_id)["status"]
        raise InspectionError(f"agent {agent_id} has no files yet (status {status}: no genome was stored)")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InspectionError(f"export: {root} exists and is not a directory")
    targets = []
    for rel in files:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise InspectionError(f"export: agent {agent_id} has a file path {rel!r} outside its folder; refusing")
        target = root.joinpath(*pure.parts)
        if target.exists() and not overwrite:
            raise InspectionError(f"export: {target} already exists (use --overwrite to replace it)")
        targets.append((target, files[rel]))
    written = []
    for target, data in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------
# archive geometry, progress and heatmaps


def _space(run: dict) -> dict:
    schema = run["descriptor_schema"] or {}
    space = schema.get("space") if isinstance(schema.get("space"), dict) else None
    if space is None or not all(k in space for k in ("names", "lower", "upper", "bins")):
        raise InspectionError("the run's descriptor_schema has no descriptor space (names, lower, upper, bins); "
                              "was this database written by a campaign?")
    return space


def _edges(run: dict) -> list[np.ndarray]:
    """Bin edges per descriptor: the archive's own (grid kinds) or ``linspace`` over the space."""
    schema = run["descriptor_schema"]
    if "edges" in schema:
        return [np.asarray(e, dtype=np.float64) for e in schema["edges"]]
    space = _space(run)
    return [np.linspace(lo, hi, b + 1) for lo, hi, b in zip(space["lower"], space["upper"], space["bins"])]


def _bin(X: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin index per descriptor (shape (n, d)), clipped into the edge bins like the archive does."""
    return np.stack([np.searchsorted(e[1:-1], X[:, j], side="right") for j, e in enumerate(edges)], axis=1) \
        if len(X) else np.zeros((0, len(edges)), dtype=np.int64)


def progress_curve(db: ArchiveDB) -> dict:
    """QD score, coverage and best fitness after each finished child, replayed from the agents.

    ``evaluations`` counts finished children (archived, rejected or failed) in the order they
    finished. Coverage and QD score are measured like the archive measures them: on the
    descriptor grid (the centroids for ``cvt``), QD score = sum over occupied cells of (best
    archived fitness - fitness_offset). Lists of equal length, one entry per finished child.
    """
    with snapshot(db):
        run = db.get_run()
        rows = db.conn.execute(
            "SELECT status, fitness, descriptors, cell FROM agents WHERE finish_seq IS NOT NULL ORDER BY finish_seq"
        ).fetchall()
    schema = run["descriptor_schema"]
    kind = schema.get("kind")
    offset = float(schema.get("fitness_offset", 0.0))
    n = len(rows)
    fitness = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    archived = np.array([r[0] == "archived" for r in rows], dtype=bool)
    best = np.fmax.accumulate(np.where(np.isnan(fitness), -np.inf, fitness)) if n else np.zeros(0)
    if kind == "cvt":
        n_cells = len(schema["centroids"])
        cells = np.array([-1 if r[3] is None else r[3] for r in rows], dtype=np.int64)
    else:
        edges = _edges(run)
        n_cells = math.prod(len(e) - 1 for e in edges)
        idx = np.flatnonzero(archived)
        desc = json.loads("[" + ",".join(rows[i][2] for i in idx) + "]") if len(idx) else []
        bins = _bin(np.asarray(desc, dtype=np.float64).reshape(len(idx), len(edges)), edges)
        cells = np.full(n, -1, dtype=np.int64)
        if len(idx):
            cells[idx] = np.ravel_multi_index(bins.T, tuple(len(e) - 1 for e in edges))
    cell_best: dict[int, float] = {}
    qd, occupied = 0.0, 0
    qd_curve = np.zeros(n)
    cov_curve = np.zeros(n)
    for i in range(n):  # running per-cell best: one dict update per archived child
        if archived[i] and cells[i] >= 0:
            c, f = int(cells[i]), float(fitness[i])
            old = cell_best.get(c)
            if old is None:
                cell_best[c] = f
                qd += f - offset
                occupied += 1
            elif f > old:
                cell_best[c] = f
                qd += f - old
        qd_curve[i] = qd
        cov_curve[i] = occupied / n_cells
    return {
        "kind": kind,
        "cells": n_cells,
        "evaluations": list(range(1, n + 1)),
        "best_fitness": [None if not math.isfinite(b) else float(b) for b in best],
        "coverage": cov_curve.tolist(),
        "qd_score": qd_curve.tolist(),
    }


@dataclass(frozen=True)
class Heatmap:
    """The archive on a 2-D grid: ``values`` (ny, nx) holds the best elite fitness per cell, NaN
    where no elite falls; ``x_edges`` (nx+1,), ``y_edges`` (ny+1,); ``elites`` is how many elites
    were binned and ``occupied`` how many cells they fill; ``dims`` the descriptor indices on the x
    (and y) axis out of ``n_descriptors``."""

    values: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    x_name: str
    y_name: str
    elites: int
    occupied: int
    dims: tuple[int, ...]
    n_descriptors: int


def heatmap(db: ArchiveDB, dims: Sequence[int] = (0, 1)) -> Heatmap:
    """Bin every elite's descriptors onto the task's descriptor grid (``runs.descriptor_schema``).

    With more than two descriptors the grid is projected onto ``dims`` (each cell keeps the best
    fitness over the other descriptors); with one descriptor the map is a single row.
    """
    with snapshot(db):
        run = db.get_run()
        elites = db.elites()
    space = _space(run)
    edges = _edges(run)
    d = len(edges)
    dims = tuple(int(i) for i in dims)[: min(2, d)]
    if len(set(dims)) != len(dims) or any(not 0 <= i < d for i in dims):
        raise InspectionError(f"heatmap dims {list(dims)} must be distinct descriptor indices in 0..{d - 1} "
                              f"({', '.join(space['names'])})")
    X = np.asarray([e["descriptors"] for e in elites], dtype=np.float64).reshape(len(elites), d)
    fit = np.asarray([e["fitness"] for e in elites], dtype=np.float64)
    bins = _bin(X, edges)
    x_edges = edges[dims[0]]
    y_edges = edges[dims[1]] if len(dims) == 2 else np.array([0.0, 1.0])
    values = np.full((len(y_edges) - 1, len(x_edges) - 1), np.nan)
    for b, f in zip(bins, fit):
        yx = (b[dims[1]] if len(dims) == 2 else 0, b[dims[0]])
        if not f <= values[yx]:  # NaN (empty) or a better elite
            values[yx] = f
    return Heatmap(values=values, x_edges=x_edges, y_edges=y_edges, x_name=space["names"][dims[0]],
                   y_name=space["names"][dims[1]] if len(dims) == 2 else "", elites=len(elites),
                   occupied=int(np.isfinite(values).sum()), dims=dims, n_descriptors=d)


# --------------------------------------------------------------------------------------------
# operators and models


def success_rates(db: ArchiveDB) -> dict:
    """How each operator and each model fared: ``{"operator": [...], "model": [...]}``, each row
    ``{"name", "children", "finished", "archived", "failed", "success_rate"}`` where success_rate =
    archived / finished among non-root children (None while none finished); NULL model is "none"."""
    rows = db.named_query("operator_success")
    out = {}
    for key in ("operator", "model"):
        agg: dict[str, Counter] = {}
        for r in rows:
            agg.setdefault(r[key], Counter()).update(
                {c: r[c] for c in ("children", "finished", "archived", "failed")})
        out[key] = [
            {"name": name, **{c: int(v[c]) for c in ("children", "finished", "archived", "failed")},
             "success_rate": (v["archived"] / v["finished"]) if v["finished"] else None}
            for name, v in sorted(agg.items())
        ]
    return out


# --------------------------------------------------------------------------------------------
# comparing campaigns


def _default_threshold(run: dict) -> float | None:
    target = ((run.get("config") or {}).get("budget") or {}).get("target_fitness")
    if target is not None:
        return float(target)
    try:
        from openended.tasks import load_task

        return load_task(run["task"]).fitness_target
    except Exception:  # a user task folder that moved: no default threshold
        return None


def campaign_metrics(db: ArchiveDB, threshold: float | None = None) -> dict:
    """Final QD score, coverage and best fitness of one campaign, and how many evaluations it took
    for the best fitness to reach ``threshold`` (default: the campaign's target fitness, else the
    task's ``[fitness] target``; None when never reached or no threshold is known)."""
    with snapshot(db):
        run = db.get_run()
        curve = progress_curve(db)
        best = db.best_agent()
    if threshold is None:
        threshold = _default_threshold(run)
    reached = None
    if threshold is not None:
        for e, b in zip(curve["evaluations"], curve["best_fitness"]):
            if b is not None and b >= threshold:
                reached = e
                break
    n = len(curve["evaluations"])
    return {
        "db": str(db.path),
        "task": run["task"],
        "archive": run["descriptor_schema"].get("kind"),
        "seed": run["seed"],
        "evaluations": n,
        "qd_score": curve["qd_score"][-1] if n else 0.0,
        "coverage": curve["coverage"][-1] if n else 0.0,
        "best_fitness": None if best is None else best["fitness"],
        "best_agent": None if best is None else best["id"],
        "threshold": threshold,
        "evaluations_to_threshold": reached,
    }


def compare(paths: Sequence[str | os.PathLike], threshold: float | None = None) -> list[dict]:
    """:func:`campaign_metrics` of each database, in the order given."""
    if not paths:
        raise InspectionError("compare: give at least one database")
    out = []
    for p in paths:
        with open_db(p) as db:
            out.append(campaign_metrics(db, threshold))
    return out
