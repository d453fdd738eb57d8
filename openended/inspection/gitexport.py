"""An agent's lineage as a git repository (GitPython): ``openended export DB AGENT --git DIR``.

One commit per ancestor, root first: the commit's tree holds exactly that agent's files, its
parent is the parent agent's commit, its message says ``agent N: operator OP, model M, fitness F
(STATUS)``. Branch ``main`` points at the agent and every commit has a lightweight tag
``agent-N``, so ``git log``, ``git diff agent-3 agent-7`` and ``git bisect`` work on the lineage.

Author, committer and dates are fixed (:data:`EPOCH` + the agent id, in seconds, UTC), so the same
lineage always gives the same commit hashes. ``.npy`` arrays are diffed as text, one value per
line like ``openended diff`` shows them, through a textconv driver set in the repository's own
config (``.git/info/attributes`` and ``.git/config``: nothing is added to the commits' trees).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from archive_db import ArchiveDB
from openended.inspection.access import InspectionError, snapshot
from openended.inspection.agents import LineageStep, lineage, safe_paths
from openended.names import Files

__all__ = ["EPOCH", "AUTHOR", "BRANCH", "GitCommit", "GitExport", "commit_message", "export_git", "export_lineage"]

#: Commit dates are ``EPOCH + agent id`` seconds (2020-01-01T00:00:00Z + id), so dates increase
#: along a lineage and the hashes depend on nothing but the lineage.
EPOCH = 1_577_836_800
#: Author and committer of every commit (name, email).
AUTHOR = ("openended", "openended@localhost")
BRANCH = "main"
_MODE = 0o100644  # a regular file; genomes carry no modes


@dataclass(frozen=True)
class GitCommit:
    """One ancestor's commit: the agent id, the commit's hex sha and its tag."""

    agent: int
    sha: str
    tag: str


@dataclass(frozen=True)
class GitExport:
    """What :func:`export_git` wrote: the repository folder, the branch and the commits, root first."""

    path: Path
    branch: str
    commits: tuple[GitCommit, ...]


def commit_message(step: LineageStep) -> str:
    """``agent N: operator OP, model M, fitness F (STATUS)`` for one :func:`lineage` step
    (``model none`` for LLM-free operators; fitness as Python prints the float, ``none`` if unset). A
    self-modification's message body is the diagnosis it carried out, so ``git log`` says why each change
    was made."""
    fitness = "none" if step["fitness"] is None else repr(float(step["fitness"]))
    model = step["model"] or "none"
    subject = f"agent {step['id']}: operator {step['operator']}, model {model}, fitness {fitness} ({step['status']})\n"
    diagnosis = (step.get("diagnosis") or "").strip()
    return f"{subject}\nDiagnosis: {diagnosis}\n" if diagnosis else subject


def _target_dir(out_dir: str | os.PathLike[str], overwrite: bool, db_path: Path) -> Path:
    """``out_dir``, checked: missing, empty, or (``overwrite``) a folder that may be replaced whole,
    which never holds the campaign database or the current directory."""
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InspectionError(f"export: {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise InspectionError(f"export: {root} exists and is not empty (use --overwrite to replace it)")
        whole = root.resolve()
        for inside, what in ((db_path.resolve(), "the campaign database"), (Path.cwd(), "the current directory")):
            if inside == whole or whole in inside.parents:
                raise InspectionError(f"export: {root} holds {what}; --overwrite would delete it, refusing")
    return root


def _lineage_files(db: ArchiveDB, agent_id: int) -> list[tuple[LineageStep, Files]]:
    """Each ancestor's lineage step and files, root first; every one must have files that stay
    inside their folder (and none under ``.git``)."""
    out = []
    with snapshot(db):
        for step in lineage(db, agent_id):
            files = db.agent_files(step["id"])
            if not files:
                raise InspectionError(f"agent {step['id']} has no files yet (status {step['status']}: "
                                      "no genome was stored)")
            for pure in safe_paths(step["id"], files):
                if any(part.lower() == ".git" for part in pure.parts):
                    raise InspectionError(f"export: agent {step['id']} has a file under .git ({pure}); refusing")
            out.append((step, files))
    return out


def _quote(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted, so spaces, quotes and newlines survive."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'.encode()


def _fast_import_stream(steps: list[tuple[LineageStep, Files]], out: BinaryIO) -> dict[int, int]:
    """The lineage as a ``git fast-import`` stream: each distinct file content once (a blob), one
    commit per ancestor on ``refs/heads/main`` whose tree is exactly its files, a tag per commit."""
    author = f"{AUTHOR[0]} <{AUTHOR[1]}>".encode()
    blob_mark: dict[bytes, int] = {}
    commit_mark: dict[int, int] = {}
    mark = 0
    for step, files in steps:
        for data in files.values():
            if data not in blob_mark:
                mark += 1
                blob_mark[data] = mark
                out.write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
        mark += 1
        aid = int(step["id"])
        commit_mark[aid] = mark
        when = b"%d +0000" % (EPOCH + aid)
        message = commit_message(step).encode()
        out.write(b"commit refs/heads/%s\nmark :%d\nauthor %s %s\ncommitter %s %s\ndata %d\n%s"
                  % (BRANCH.encode(), mark, author, when, author, when, len(message), message))
        if step["parent_id"] is not None:
            out.write(b"from :%d\n" % commit_mark[int(step["parent_id"])])
        out.write(b"deleteall\n")
        for path, data in sorted(files.items()):
            out.write(b"M %o :%d %s\n" % (_MODE, blob_mark[data], _quote(path)))
        out.write(b"\nreset refs/tags/agent-%d\nfrom :%d\n\n" % (aid, mark))
    out.write(b"done\n")
    return commit_mark


def export_git(db: ArchiveDB, agent_id: int, out_dir: str | os.PathLike[str], *,
               overwrite: bool = False) -> GitExport:
    """Write the lineage of ``agent_id`` (root first) as a git repository at ``out_dir``, with the
    work tree checked out at the agent. ``out_dir`` must be missing or empty unless ``overwrite``
    (then it is replaced whole). The repository is built in a temporary folder beside ``out_dir``
    and moved into place at the end, so a failed export leaves nothing half-written.

    GitPython creates the repository and feeds the whole lineage to one ``git fast-import``
    process (thousands of commits a second; the objects are exactly those ``git commit`` would
    write), then points ``main`` and HEAD at the agent and checks it out."""
    import git

    # absolute: git runs fast-import inside the new repository, where a relative marks path would point elsewhere
    root = _target_dir(out_dir, overwrite, Path(db.path)).absolute()
    steps = _lineage_files(db, agent_id)
    root.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        repo = git.Repo.init(build)
        with repo.config_writer() as cfg:
            cfg.set_value('diff "npy"', "textconv", f"{shlex.quote(sys.executable)} -m openended.inspection.npy_text")
        (build / ".git" / "info").mkdir(exist_ok=True)
        (build / ".git" / "info" / "attributes").write_text("*.npy diff=npy\n")
        marks = build / ".git" / "openended-export.marks"
        with tempfile.TemporaryFile() as stream:
            commit_marks = _fast_import_stream(steps, stream)
            stream.seek(0)
            repo.git.fast_import("--quiet", "--done", f"--export-marks={marks}", istream=stream)
        sha_of_mark = dict(line.split() for line in marks.read_text().splitlines())
        marks.unlink()
        repo.git.pack_refs("--all")  # one packed-refs file rather than a file per tag
        repo.head.reference = repo.heads[BRANCH]
        repo.head.reset(index=True, working_tree=True)
        repo.close()
        _move_into_place(build, root)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    commits = tuple(GitCommit(agent=aid, sha=sha_of_mark[f":{mark}"], tag=f"agent-{aid}")
                    for aid, mark in commit_marks.items())
    return GitExport(path=root, branch=BRANCH, commits=commits)


def _move_into_place(build: Path, root: Path) -> None:
    """Replace ``root`` (missing, empty, or being overwritten) by the finished ``build`` folder."""
    if not root.exists():
        build.rename(root)
        return
    old = root.parent / f"{build.name}.old"
    root.rename(old)
    build.rename(root)
    shutil.rmtree(old)


def export_lineage(db: ArchiveDB, agent_id: int, out_dir: str | os.PathLike[str], *,
                   overwrite: bool = False) -> list[Path]:
    """Every ancestor's files, root first, each in ``out_dir/agent-N/``; returns the paths written.
    Refuses paths outside an agent's folder and existing files unless ``overwrite``."""
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InspectionError(f"export: {root} exists and is not a directory")
    targets = []
    for step, files in _lineage_files(db, agent_id):
        folder = root / f"agent-{step['id']}"
        for pure, data in zip(safe_paths(step["id"], files), files.values(), strict=True):
            target = folder.joinpath(*pure.parts)
            if target.exists() and not overwrite:
                raise InspectionError(f"export: {target} already exists (use --overwrite to replace it)")
            targets.append((target, data))
    for target, data in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return [t for t, _ in targets]
