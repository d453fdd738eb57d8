"""The driver's files on worker nodes: sent through Ray, cached per node by content hash.

Nothing but Ray is assumed shared between a campaign's driver and its worker nodes: not the task
folder (built-in or a user's), not the checkout, not a temporary folder, not the database. What an
evaluation needs from the driver's disk travels as a :class:`ShippedTask`:

- the driver packs the task folder (task.toml, evaluate.py, seed/, scorer folders, maps, data: every
  file but ``__pycache__`` and dot-files, as the sandboxes copy it) and the in-sandbox runner's source
  (:func:`openended.sandbox.jobdir.runner_source`) into one bundle, puts it into Ray's object store once
  per session (:func:`ship`), and sends with every Ray task its content hash and its ObjectRef, nested
  in the reference so that Ray does not fetch the bundle with every task;
- a worker (:func:`load_ref`) looks for the hash in its node's cache (``<work dir>/openended-node-<uid>/
  tasks/<hash>``, :func:`openended.sandbox.engine.work_dir`), fetches and unpacks the bundle only on a
  miss (into a temporary folder renamed into place, so that workers racing on one node agree), loads
  the task from there and runs the driver's runner in its sandboxes.

A campaign's own prompt templates (``llm.templates_dir``) travel the same way: the driver's path in a
:class:`Mutate` job becomes a :class:`ShippedPath` (:func:`ship_paths`), which the worker turns into its
node's copy (:func:`local_path`).

Genomes (parents, stored children, the editor of a self-edit) travel inside the jobs themselves; only
the driver opens the database. Still a driver path on the worker side: the gateway's socket (the
model gateway across nodes is issue 14's item 3).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openended.tasks import Task, TaskRef
from openended.tasks import load_ref as load_local_ref

if TYPE_CHECKING:
    from openended.engine.jobs import Mutate

RUNNER_FILE = "runner.py"  # beside the task's folder in a node's cache entry


@dataclass(frozen=True)
class ShippedTask(TaskRef):
    """A task reference whose folder travels through Ray: ``path`` is the driver's (its last part names
    the folder on the node too), ``digest`` the bundle's content hash, ``bundle`` its ObjectRef."""

    digest: str = ""
    bundle: Any = None
    size: int = 0  # bytes of files in the bundle


def pack(folder: str | Path) -> dict[str, Any]:
    """The bundle of a task folder: ``files`` (relative POSIX path -> bytes), ``runner`` (the runner's
    source), ``name`` (the folder's name) and ``digest`` (the hash of all three)."""
    from openended.sandbox.jobdir import runner_source

    root = Path(folder).resolve()
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                path = Path(dirpath) / name
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    runner = runner_source()
    return {"files": files, "runner": runner, "name": root.name, "digest": _digest(root.name, files, runner)}


def _digest(name: str, files: dict[str, bytes], runner: str) -> str:
    h = hashlib.sha256(name.encode() + b"\0" + runner.encode() + b"\0")
    for rel in sorted(files):
        data = files[rel]
        h.update(f"{rel}\0{len(data)}\0".encode() + data)
    return h.hexdigest()[:32]


def ship(ref: TaskRef) -> ShippedTask:
    """The driver's side: the task's bundle into Ray's object store (Ray must be initialised); keep the
    returned reference alive for as long as workers may need the bundle."""
    import ray

    if isinstance(ref, ShippedTask):
        return ref
    bundle = pack(ref.path)
    size = sum(len(data) for data in bundle["files"].values())
    return ShippedTask(ref.path, ref.variant, digest=bundle["digest"], bundle=ray.put(bundle), size=size)


def cache_dir() -> Path:
    """This node's cache of shipped tasks."""
    from openended.sandbox.engine import work_dir

    return Path(work_dir()) / f"openended-node-{os.getuid()}" / "tasks"


def localize(ref: ShippedTask) -> Path:
    """This node's copy of a shipped task: ``<cache>/<digest>`` holding the task's folder (under its own
    name) and the runner; fetched from the object store only when the node has no copy yet."""
    target = cache_dir() / ref.digest
    if (target / RUNNER_FILE).is_file():
        return target
    import ray

    bundle = ray.get(ref.bundle)
    if _digest(bundle["name"], bundle["files"], bundle["runner"]) != ref.digest:
        raise RuntimeError(f"the task bundle {ref.digest} arrived changed")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
    try:
        folder = staging / _safe(bundle["name"])
        folder.mkdir()
        for rel, data in bundle["files"].items():
            path = folder / _safe(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (staging / RUNNER_FILE).write_text(bundle["runner"])  # written last: its presence marks a whole copy
        staging.chmod(0o755)
        try:
            os.rename(staging, target)
        except OSError:  # another worker of this node was first: its copy is the same
            if not (target / RUNNER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _safe(rel: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RuntimeError(f"the task bundle holds a bad path {rel!r}")
    return rel


_LOADED: dict[tuple[str, str | None], tuple[Task, str]] = {}  # (digest, variant) -> the task, the runner


def load_ref(ref: TaskRef) -> Task:
    """The worker's side: the task of ``ref``, from this node's cache when it was shipped (the driver's
    runner then runs this process's sandboxes), else from its path as it is."""
    if not isinstance(ref, ShippedTask):
        return load_local_ref(ref)
    from openended.sandbox.jobdir import use_runner

    key = (ref.digest, ref.variant)
    loaded = _LOADED.get(key)
    if loaded is None:
        entry = localize(ref)
        folder = entry / _safe(Path(ref.path).name)
        if not folder.is_dir():  # the driver's path ended otherwise than the folder's own name (e.g. a link)
            folder = next(p for p in entry.iterdir() if p.is_dir())
        loaded = _LOADED[key] = (load_local_ref(TaskRef(str(folder), ref.variant)), (entry / RUNNER_FILE).read_text())
    use_runner(loaded[1])
    return loaded[0]


class ShippedPath(str):
    """A folder of the driver's, as the path a job names it (a ``str``), carrying its shipped bundle."""

    shipped: ShippedTask

    def __new__(cls, shipped: ShippedTask) -> ShippedPath:
        path = super().__new__(cls, shipped.path)
        path.shipped = shipped
        return path

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShippedPath, (self.shipped,))


def ship_paths(job: Mutate, shipped: dict[str, ShippedPath]) -> Mutate:
    """The driver's side: ``job`` with its driver folders (``templates_dir``) shipped; ``shipped`` keeps
    each folder's bundle for the session (one put per folder)."""
    import dataclasses

    folder = job.templates_dir
    if folder is None or isinstance(folder, ShippedPath) or not Path(folder).is_dir():
        return job  # none, or not a folder: the worker says so, as before
    if folder not in shipped:
        shipped[folder] = ShippedPath(ship(TaskRef(str(Path(folder).resolve()))))
    return dataclasses.replace(job, templates_dir=shipped[folder])


def local_path(path: str | None) -> str | None:
    """The worker's side: this node's copy of a shipped folder; any other path as it is."""
    if not isinstance(path, ShippedPath):
        return path
    entry = localize(path.shipped)
    return str(next(p for p in entry.iterdir() if p.is_dir()))
