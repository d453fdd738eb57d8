"""Store part of the benchmark: ArchiveDB insert throughput and lineage-query latency.

Used by the benchmark script (``measure_insert``, ``ancestors_timings``); runnable alone:

    python bench/store_db.py [--n 100000] [--batch 1000] [--depth 10000] [--out FILE]
    python bench/store_db.py --smoke --out FILE     # CI: 2,000 children, a 500-deep chain (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from archive_db import ArchiveDB, Outcome, Proposal

DESCRIPTORS = {"names": ["d0", "d1"], "bounds": [[0.0, 1.0], [0.0, 1.0]], "bins": [32, 32]}


def _fresh(path: str | os.PathLike) -> ArchiveDB:
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{os.fspath(path)}{suffix}")
        if p.exists():
            p.unlink()
    db = ArchiveDB(path)
    db.create_run(name="bench", task="bench", seed=0, config={}, descriptor_schema=DESCRIPTORS)
    return db


def measure_insert(path: str | os.PathLike, n: int = 100_000, batch: int = 1000) -> float:
    """Children per second for ``n`` children written in batches of ``batch``: one ``propose``
    and one ``record`` (straight to 'archived', with a ~1.2 KB unique genome, fitness,
    descriptors, novelty and cell) per batch. Genome generation is included in the time.
    ``path`` is deleted and recreated."""
    rng = np.random.default_rng(0)
    db = _fresh(path)
    try:
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            proposals = []
            for i in range(start, stop):
                parent = None if i == 0 else int(rng.integers(0, i))
                proposals.append(Proposal(id=i, parent_id=parent, operator="gaussian", seed=i))
            payload = rng.bytes(1200 * (stop - start))
            fit = rng.random(stop - start).tolist()
            desc = rng.random((stop - start, 2)).tolist()
            outcomes = [
                Outcome(
                    id=i,
                    status="archived",
                    files={"params.bin": payload[(i - start) * 1200:(i - start + 1) * 1200],
                           "controller.py": b"x = 1\n"},
                    fitness=fit[i - start],
                    descriptors=desc[i - start],
                    novelty=fit[i - start],
                    cell=i % 1024,
                    archive_event="improved",
                    eval_seconds=0.01,
                )
                for i in range(start, stop)
            ]
            db.propose(proposals)
            db.record(outcomes)
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
    return n / elapsed


def ancestors_timings(path: str | os.PathLike, depth: int = 10_000, repeats: int = 20) -> tuple[float, float]:
    """Median milliseconds of ``ArchiveDB.ancestors`` (``Ancestor`` tuples) for the leaf of a ``depth``-deep
    chain of archived agents: wall clock, and the calling thread's CPU time (``time.thread_time``: what
    the call itself costs, less moved by other processes on a shared machine). ``path`` is deleted and
    recreated."""
    db = _fresh(path)
    try:
        genome = db.put_genome({"params.bin": b"\x00" * 64})
        with db.transaction():
            for start in range(0, depth, 1000):
                ids = range(start, min(depth, start + 1000))
                db.propose(Proposal(id=i, parent_id=i - 1 if i else None, operator="gaussian", seed=i) for i in ids)
                db.record(
                    Outcome(id=i, status="archived", genome_hash=genome, fitness=float(i),
                            descriptors=[0.5, 0.5], novelty=0.1, cell=i % 1024)
                    for i in ids
                )
        leaf = depth - 1
        assert len(db.ancestors(leaf)) == depth
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            db.ancestors(leaf)
            c1, t1 = time.thread_time(), time.perf_counter()
            wall.append((t1 - t0) * 1000.0)
            cpu.append((c1 - c0) * 1000.0)
    finally:
        db.close()
    return statistics.median(wall), statistics.median(cpu)


def measure_ancestors(path: str | os.PathLike, depth: int = 10_000, repeats: int = 20) -> float:
    """Median wall-clock milliseconds of ``ArchiveDB.ancestors`` (see :func:`ancestors_timings`)."""
    return ancestors_timings(path, depth, repeats)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--smoke", action="store_true", help="2,000 children, depth 500: checks the script; same keys")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.depth, args.repeats = 2000, 500, 3
    with tempfile.TemporaryDirectory() as tmp:
        rate = measure_insert(Path(tmp) / "insert.db", n=args.n, batch=args.batch)
        ms, cpu_ms = ancestors_timings(Path(tmp) / "chain.db", depth=args.depth, repeats=args.repeats)
    result = {
        "insert_children_per_s": round(rate, 1),
        "insert_n": args.n,
        "insert_batch": args.batch,
        "ancestors_median_ms": round(ms, 3),
        "ancestors_median_cpu_ms": round(cpu_ms, 3),
        "ancestors_depth": args.depth,
        "smoke": args.smoke,
    }
    print(f"insert: {rate:,.0f} children/s ({args.n} children, batches of {args.batch})")
    print(f"ancestors: {ms:.2f} ms median, {cpu_ms:.2f} ms of CPU (chain depth {args.depth})")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
