"""Archive + parent selection cost per child at a large archive.

Fills an archive to ``n`` members (through ``restore_archive``, as a resumed campaign does), then
times, per child: one ``select_parents(n=1)``, the lineage bookkeeping, and one ``add`` (which
computes the child's novelty against all members). The novelty archive runs with threshold 0 so
every timed child is admitted: the worst case (member arrays grow, the cKDTree is rebuilt).

    python bench/archive_bench.py                 # novelty archive, every strategy
    python bench/archive_bench.py --out r.json --n 100000 --kind novelty --selection curiosity
    python bench/archive_bench.py --smoke --out r.json   # CI: 2,000 members, 200 children (seconds)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from openended.qd import DescriptorSpace, make_archive, restore_archive
from openended.selection import SELECTION_STRATEGIES, LineageCounts, select_parents

# the maze-medium descriptor space
SPACE = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [5.0, 5.0], "upper": [295.0, 135.0], "bins": [29, 13]})
FITNESS_OFFSET = -318.0


def _filled(n: int, kind: str, seed: int):
    rng = np.random.default_rng(seed)
    params = {"threshold": 0.0} if kind == "novelty" else {}
    if kind == "cvt":
        params["cells"] = 1024
    empty = make_archive(kind, space=SPACE, fitness_offset=FITNESS_OFFSET, seed=seed, **params)
    X = rng.uniform(SPACE.lower, SPACE.upper, size=(n, SPACE.dim))
    F = -np.linalg.norm(X - np.array([270.0, 120.0]), axis=1)
    if kind in ("novelty", "all"):
        elites = [
            {"cell": i, "agent_id": i, "fitness": float(F[i]), "descriptors": X[i].tolist(),
             "novelty": float(v)}
            for i, v in enumerate(rng.exponential(1.0, size=n))
        ]
        archive = restore_archive(schema=empty.schema(), state=empty.state(), elites=elites)
    else:  # grid / cvt hold at most one member per cell: fill by adding
        archive = empty
        archive.add_batch(range(n), F, X)
    n_ids = n
    counts = LineageCounts.from_counts(
        {i: int(c) for i, c in enumerate(rng.poisson(1.0, size=n_ids)) if c},
        {i: int(c) for i, c in enumerate(rng.poisson(0.3, size=n_ids)) if c},
    )
    return archive, counts, n_ids


def measure_archive_ms_per_child(n: int = 100_000, kind: str = "novelty", selection: str = "curiosity",
                                 children: int = 8000, seed: int = 0) -> float:
    """Mean milliseconds per child for select (n=1) + add (with novelty) at an archive of n members."""
    archive, counts, next_id = _filled(n, kind, seed)
    rng = np.random.default_rng(seed + 1)
    X = rng.uniform(SPACE.lower, SPACE.upper, size=(children, SPACE.dim))
    F = -np.linalg.norm(X - np.array([270.0, 120.0]), axis=1)
    # warm up (first call allocates caches)
    select_parents(selection, archive, counts, rng, n=1)
    t0 = time.perf_counter()
    for i in range(children):
        parent = int(select_parents(selection, archive, counts, rng, n=1)[0])
        counts.note_child(parent)
        result = archive.add(next_id + i, F[i], X[i])
        if result.status == "new_cell":
            counts.note_discovery(parent)
    return (time.perf_counter() - t0) / children * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--kind", default="novelty")
    ap.add_argument("--selection", default=None, help="one strategy (default: all)")
    ap.add_argument("--children", type=int, default=8000, help="timed children (8000 spans two tree rebuilds at 100k)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--smoke", action="store_true", help="2,000 members, 200 children: checks the script; same keys")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.children = 2000, 200
    strategies = [args.selection] if args.selection else list(SELECTION_STRATEGIES)
    results = {}
    for s in strategies:
        ms = measure_archive_ms_per_child(n=args.n, kind=args.kind, selection=s, children=args.children)
        results[s] = ms
        print(f"{args.kind} archive, {args.n} members, selection {s}: {ms:.3f} ms per child", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"n": args.n, "kind": args.kind, "children": args.children, "ms_per_child": results, "smoke": args.smoke},
            indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
