"""Resume and the loop on a store that already holds N agents (issue 18; ``bench/scale.py`` calls it).

    python bench/scale_resume.py --agents 10000000 --tmp /big/disk --out r.json   # builds, then measures
    python bench/scale_resume.py --smoke --out r.json                             # CI: 2,000 agents

``build(path, n)`` writes a stopped no-op campaign (``bench/tasks/noop``, a 10 x 10 grid archive, the free
mode) whose store holds ``n`` finished agents: the run row, config and driver state come from a real
``Campaign``; the agents go straight into SQLite (indexes dropped for the bulk insert and rebuilt), the
tree's shape that of ``bench/inspect_bench.py`` (parents mostly among the last 64 children); the archive's
100 elites are the best agent of each cell, added to the campaign's own archive so that its state is one
the driver could have written. ``measure(path, n, children)`` then resumes the real campaign in a fresh
process on a running Ray and reports:

- ``resume_seconds``: constructing the ``Campaign`` (store opened, archive, lineage counts, counters and
  pending work restored from the store) until its first batch is back from Ray (the first progress update);
- ``noop_children_per_s``: the loop's children per second after that first update, over ``children``;
- ``driver_rss_mb``: the resumed driver process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from archive_db import ArchiveDB
from openended.config import load_config
from openended.mutation.gaussian import dump_params

NOOP = str(Path(__file__).resolve().parent / "tasks" / "noop")
WINDOW = 64  # parents come from the last WINDOW children (2% from anywhere), as in inspect_bench


def config(db: Path, budget: int) -> Any:
    return load_config(None, {"deterministic": False, "task": NOOP, "db": str(db), "budget.max_children": budget,
                              "archive.kind": "grid", "mutation.operator": "noop", "batch_size": 64,
                              "max_in_flight": 4, "stats_every_seconds": 5.0, "sandbox.kind": "inprocess"})


def _rows(start: int, ids: np.ndarray, rng: np.random.Generator, depth: np.ndarray, genomes: list[str],
          best: dict[int, tuple[float, int]], cell_of: Any) -> list[tuple]:
    recent = np.maximum(ids - 1 - rng.integers(0, WINDOW, size=len(ids)), 0)
    anywhere = (rng.random(len(ids)) * np.maximum(ids, 1)).astype(np.int64)
    parents = np.where(rng.random(len(ids)) < 0.98, recent, anywhere)
    desc = rng.uniform(-1.0, 1.0, size=(len(ids), 2))
    fitness = -np.hypot(desc[:, 0], desc[:, 1])
    cells = cell_of(desc)
    gh = rng.integers(0, len(genomes), size=len(ids))
    u = rng.random(len(ids))
    rows = []
    for j, i in enumerate(ids.tolist()):
        parent = None if i == 0 else int(parents[j])
        depth[i] = 0 if parent is None else depth[parent] + 1
        t = 1.7e9 + i * 1e-3
        f, c = float(fitness[j]), int(cells[j])
        archived = u[j] < 0.3 or i == 0
        if archived and (c not in best or f > best[c][0]):
            best[c] = (f, i)
        rows.append((i, parent, int(depth[i]), "archived" if archived else "rejected", "seed" if i == 0 else "noop",
                     i, genomes[gh[j]], f, f"[{float(desc[j, 0])!r},{float(desc[j, 1])!r}]", float(u[j]),
                     c if archived else None, "new_cell" if archived and u[j] < 0.01 else None, "{}", "",
                     0.0, t, t, t, t, i + 1))
    return rows


def build(path: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """A stopped no-op campaign holding ``n`` finished agents (see the module's docstring)."""
    from openended.engine import Campaign

    started = time.monotonic()
    campaign = Campaign(config(path, n))
    archive, state, rng_state = campaign.archive, dict(campaign.state), campaign.rng.bit_generator.state
    campaign.close()
    rng = np.random.default_rng(seed)
    with ArchiveDB(path) as db:
        genomes = [db.put_genome({"weights.npy": dump_params(rng.uniform(-1, 1, 2))}) for _ in range(256)]
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                          "AND tbl_name = 'agents'").fetchall()
    for name, _ in indexes:
        con.execute(f"DROP INDEX {name}")
    depth = np.zeros(n, dtype=np.int64)
    best: dict[int, tuple[float, int]] = {}
    for start in range(0, n, 100_000):
        ids = np.arange(start, min(n, start + 100_000))
        rows = _rows(start, ids, rng, depth, genomes, best, archive._measure.cells)
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO agents(id, parent_id, depth, status, operator, seed, genome_hash, fitness, descriptors, "
            "novelty, cell, archive_event, metrics, feedback, eval_seconds, created_at, mutated_at, evaluated_at, "
            "finished_at, finish_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    for _, sql in indexes:
        con.execute(sql)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    elites: dict[int, int] = {}
    with ArchiveDB(path) as db:
        for f, i in sorted(best.values(), key=lambda b: b[1]):  # the archive sees its elites in id order
            x = json.loads(db.conn.execute("SELECT descriptors FROM agents WHERE id = ?", (i,)).fetchone()[0])
            added = archive.add(i, f, np.asarray(x))
            elites[int(added.cell or 0)] = i
        db.set_elites(elites)
        db.update_run(status="stopped", state={**state, "rng": rng_state, "archive": archive.state(),
                                               "elapsed_seconds": 0.0})
    return {"build_seconds": round(time.monotonic() - started, 1), "db_bytes": path.stat().st_size,
            "elites": len(elites), "max_depth": int(depth.max())}


class FirstUpdate:
    """A progress display that notes the campaign's first update (its first batch is back) and the last."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def note(self, message: str) -> None:
        pass

    def update(self, standing: Any) -> None:
        now = (time.perf_counter(), int(standing.children_done))
        if self.first is None:
            self.first = now
        self.last = now


def resume_once(path: Path, children: int) -> dict[str, Any]:
    """In this process (Ray already running): resume, run ``children`` more, report the figures."""
    from openended.engine import Campaign

    con = sqlite3.connect(path)  # not ArchiveDB: the Campaign below is what opens (and migrates) the store
    n = int(con.execute("SELECT MAX(id) + 1 FROM agents").fetchone()[0])  # a kept database may have been resumed
    con.close()
    progress = FirstUpdate()
    started = time.perf_counter()
    campaign = Campaign(config(path, n + children), progress=progress)
    opened = time.perf_counter() - started
    summary = campaign.run()
    ended = time.perf_counter()
    assert progress.first is not None and summary.children_done >= n + children, summary
    at, done = progress.first
    rate = (summary.children_done - done) / max(ended - at, 1e-9)
    return {"resume_seconds": round(at - started, 2), "resume_open_seconds": round(opened, 2),
            "noop_children_per_s": round(rate, 1), "resumed_children": summary.children_done - n,
            "driver_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def member_bytes_once(n: int, seed: int = 0) -> dict[str, Any]:
    """In this process: the resident bytes a restored ``all`` archive (the default, every child a member; 2-D
    descriptors as the maze's) holds per member, once the elites it was restored from are freed; and the seconds
    ``restore_archive`` takes on them (a resume's, reading the elites from the store aside)."""
    import ctypes
    import gc

    from openended.qd import DescriptorSpace, make_archive, restore_archive
    from openended.tasks import load_task

    task = load_task("maze-medium")
    space = DescriptorSpace.from_dict(task.descriptor_space)
    schema = make_archive("all", space=space, fitness_offset=task.fitness_lower, seed=seed).schema()
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    gc.collect()
    trim(0)
    before = _rss_bytes()  # the elites to restore from are made and freed after this
    X = np.random.default_rng(seed).uniform(space.lower, space.upper, size=(n, len(space.lower)))
    elites = [{"cell": i, "agent_id": i, "fitness": 0.0, "descriptors": X[i].tolist(), "novelty": 0.0}
              for i in range(n)]
    del X
    started = time.perf_counter()
    archive = restore_archive(schema=schema, state={}, elites=elites)
    seconds = time.perf_counter() - started
    del elites
    gc.collect()
    trim(0)
    held = _rss_bytes() - before
    # the same members as columns (ArchiveDB.elite_arrays' shape): no dict per member
    columns = {name: np.array(values) for name, values in archive.members().items()}
    del archive
    started = time.perf_counter()
    restore_archive(schema=schema, state={}, elites=columns)
    columns_seconds = time.perf_counter() - started
    return {"archive_members": n, "archive_bytes_per_member": round(held / n, 1),
            "archive_restore_seconds": round(seconds, 2), "archive_restore_seconds_columns": round(columns_seconds, 2)}


def _fresh_process(args: list[str], out: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    subprocess.run([sys.executable, __file__, *args, "--out", str(out)], check=True, env=env)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def measure(path: Path, children: int, ray_address: str, members: int) -> dict[str, Any]:
    """``resume_once`` and ``member_bytes_once`` each in a fresh process (its own peak memory, nothing cached
    from the build)."""
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    result = _fresh_process(["--resume", str(path), "--children", str(children)], path.with_suffix(".r.json"), env)
    result.update(_fresh_process(["--member-bytes", str(members)], path.with_suffix(".m.json")))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="resume and the loop on a store of N agents")
    ap.add_argument("--agents", type=int, default=10_000_000)
    ap.add_argument("--children", type=int, default=5000)
    ap.add_argument("--members", type=int, default=1_000_000, help="the archive whose bytes per member are measured")
    ap.add_argument("--resume", help="(internal) resume this database in this process and write the figures")
    ap.add_argument("--member-bytes", type=int, help="(internal) measure an archive of this size in this process")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", help="build the database here and keep it (an existing one is resumed again)")
    ap.add_argument("--smoke", action="store_true", help="2,000 agents, 300 children, 10,000 members (CI)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.smoke:
        args.agents, args.children, args.members = 2000, 300, 10_000
    import ray

    if args.member_bytes:
        result = member_bytes_once(args.member_bytes)
    elif args.resume:
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.ERROR, log_to_driver=False)
        result = resume_once(Path(args.resume), args.children)
    else:
        result = {**figures(args.agents, args.children, args.members, tmp=args.tmp, keep=args.keep),
                  "smoke": args.smoke}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def figures(n: int, children: int, members: int, *, tmp: str | None = None, keep: str | None = None,
            ray_address: str | None = None) -> dict[str, Any]:
    """Build (unless ``keep`` names an existing database), then measure; a Ray of 2 CPUs started if no
    ``ray_address`` is given."""
    import tempfile

    import ray

    with tempfile.TemporaryDirectory(prefix="openended-resume-", dir=tmp) as folder:
        path = Path(keep) if keep else Path(folder) / "resume.db"
        result: dict[str, Any] = {} if path.exists() else {"build": build(path, n)}
        if ray_address is not None:
            return {**result, **measure(path, children, ray_address, members)}
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            return {**result, **measure(path, children, ray.get_runtime_context().gcs_address, members)}
        finally:
            ray.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
