"""One agent at a time: the best agents, one agent's record, its lineage, diffs and its files."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TypedDict

import numpy as np

from archive_db import ArchiveDB
from openended.gateway.records import DIAGNOSIS_ENDPOINT
from openended.genome_diff import genome_diff
from openended.inspection.access import InspectionError, ids_json, snapshot
from openended.names import SELF_IMPROVE, Files, genome_path_problem

__all__ = ["LineageStep", "top", "show", "lineage", "diff", "export", "safe_paths"]

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
        "SELECT agent_id FROM elites WHERE agent_id IN (SELECT value FROM json_each(?))", (ids_json(ids),))}


def _file_entry(path: str, data: bytes, contents: bool, max_text_bytes: int) -> dict:
    entry: dict[str, object] = {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
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


def show(db: ArchiveDB, agent_id: int, *, contents: bool = False, max_text_bytes: int = 65536,
         transcript: bool = False) -> dict:
    """Everything about one agent: its row, evaluations, feedback, children and files.

    ``files`` lists path, bytes, sha256 and kind (text | npy | binary) of each file; with
    ``contents`` also the text (cut at ``max_text_bytes``) or the array values of ``.npy`` files.
    With ``transcript``, ``transcripts``: its use of the model gateway, one per evaluation that had it.
    """
    with snapshot(db):
        agent = db.agent(agent_id)
        evaluations = db.evaluations(agent_id)
        transcripts = _transcripts(db, agent_id) if transcript else None
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
        **({"transcripts": transcripts} if transcript else {}),
    }


def _transcripts(db: ArchiveDB, agent_id: int) -> list[dict]:
    import sqlite3

    try:
        return db.transcripts(agent_id)
    except sqlite3.OperationalError:  # a database from before transcripts (opened read-only, not migrated)
        return []


class LineageStep(TypedDict):
    """One step of :func:`lineage`."""

    id: int
    parent_id: int | None
    depth: int
    operator: str
    model: str | None
    status: str
    fitness: float | None
    delta_fitness: float | None  # fitness - the parent's fitness (None for a root, or either unset)
    novelty: float | None
    cell: int | None
    archive_event: str | None
    diagnosis: str | None  # self_improve: the model's diagnosis that the self-edit carried out


def lineage(db: ArchiveDB, agent_id: int) -> list[LineageStep]:
    """Root first, ``agent_id`` last: each step's id, parent, operator, model, status, fitness,
    change in fitness from its parent (``delta_fitness``), cell, archive event, and for a self-modification
    (``self_improve``) the diagnosis it carried out."""
    with snapshot(db):
        steps = db.ancestors(agent_id)
        model = dict(db.conn.execute(
            "SELECT id, model FROM agents WHERE id IN (SELECT value FROM json_each(?))",
            (ids_json(s.id for s in steps),)).fetchall())
        diagnosis = dict(db.conn.execute(
            "SELECT t.agent_id, json_extract(e.value, '$.response') FROM transcripts t, json_each(t.entries) e "
            "WHERE t.agent_id IN (SELECT value FROM json_each(?)) AND json_extract(e.value, '$.endpoint') = ? "
            "ORDER BY t.id DESC",
            (ids_json(s.id for s in steps if s.operator == SELF_IMPROVE), DIAGNOSIS_ENDPOINT)).fetchall())
    out: list[LineageStep] = []
    prev = None
    for s in steps:
        delta = None
        if prev is not None and s.fitness is not None and prev.fitness is not None:
            delta = s.fitness - prev.fitness
        out.append({"id": s.id, "parent_id": s.parent_id, "depth": s.depth, "operator": s.operator,
                    "model": model.get(s.id), "status": s.status, "fitness": s.fitness,
                    "delta_fitness": delta, "novelty": s.novelty, "cell": s.cell,
                    "archive_event": s.archive_event, "diagnosis": diagnosis.get(s.id)})
        prev = s
    return out


# --------------------------------------------------------------------------------------------
# diff

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_HEADER = re.compile(r"^(?:---|\+\+\+) (?:a/|b/)?(.*?)(?:\t.*)?$")
_BINARY = re.compile(r"^Binary files (?:a/)?(.*?) and (?:b/)?(.*?) differ$")


def _diff_files(text: str) -> list[dict]:
    """Per file of a unified diff: ``{"path", "added", "removed", "binary"}`` (added/removed None
    for a binary file). Hunk line counts say where a hunk ends, so a content line such as
    ``--- x`` is never taken for a file header."""
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


def _no_genome(agent: dict) -> str | None:
    """Why an agent has no genome (failed before one was stored, or not made yet), or None if it has one."""
    if agent["genome_hash"] is not None:
        return None
    if agent["status"] == "failed":
        reason = str(agent["fail_reason"] or "no reason given")
        reason = reason if len(reason) <= 500 else reason[:500] + "..."
        return f"agent {agent['id']} has no genome: it failed at {agent['fail_stage']} ({reason})"
    return f"agent {agent['id']} has no genome yet (status {agent['status']})"


def diff(db: ArchiveDB, a: int, b: int | None = None) -> dict:
    """Unified diff from ``a`` to ``b``; with ``b`` None from ``a``'s parent to ``a`` (a root
    against an empty tree). Returns ``{"from", "to", "text", "files": [{"path", "added", "removed",
    "binary"}]}`` (``from`` is None for a root). InspectionError for an agent with no genome (one that
    failed at mutation, or is not mutated yet), naming why."""
    with snapshot(db):
        if b is None:
            old, new = db.agent(a)["parent_id"], a
        else:
            old, new = a, b
        for aid in (new, old):
            problem = None if aid is None else _no_genome(db.agent(aid))
            if problem is not None:  # not an empty tree: diffing it would show every file deleted
                raise InspectionError(f"{problem}; nothing to diff")
        old_files: Files = db.agent_files(old) if old is not None else {}
        new_files = db.agent_files(new)
    text = genome_diff(old_files, new_files, "empty" if old is None else f"agent {old}", f"agent {new}")
    return {"from": old, "to": new, "text": text, "files": _diff_files(text)}


# --------------------------------------------------------------------------------------------
# export


def safe_paths(agent_id: int, files: Files) -> list[PurePosixPath]:
    """The agent's file paths, each a genome path (:func:`~openended.names.genome_path_problem`), so it
    stays inside its folder: the store refuses other names, but a database may be old or made by hand."""
    out = []
    for rel in files:
        problem = genome_path_problem(rel)
        if problem is not None:
            raise InspectionError(f"export: agent {agent_id} has a file path outside its folder or unsafe to "
                                  f"write: {problem}; refusing")
        out.append(PurePosixPath(rel))
    return out


def export(db: ArchiveDB, agent_id: int, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
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
    for pure, data in zip(safe_paths(agent_id, files), files.values(), strict=True):
        target = root.joinpath(*pure.parts)
        if target.exists() and not overwrite:
            raise InspectionError(f"export: {target} already exists (use --overwrite to replace it)")
        targets.append((target, data))
    written = []
    for target, data in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written
