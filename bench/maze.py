"""Deceptive-maze benchmark: novelty-driven, fitness-only and random search through the engine,
with pyribs MAP-Elites as the peer baseline, on maze-medium and maze-hard.

    python bench/maze.py --out maze.json --seeds 5 --budget 50000
    python bench/maze.py --smoke --out maze.json    # CI: one seed, 64 children per run (about a minute)

Per maze and method it writes solved_runs, runs, median_evals_to_solve (over solved runs) and
mean_final_coverage. "Evaluations to solve" counts children proposed up to and including the
first one that solved the maze (final distance < 5).
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from openended.config import load_config
from openended.engine import Campaign
from openended.qd import DescriptorSpace
from openended.sandbox.inprocess import load_evaluator
from openended.tasks import load_task

# Our engine's methods: (archive kind, selection strategy, selection params). "novelty" is
# steady-state novelty search: every child kept, parents drawn from the 250 most recent children
# in proportion to their novelty (mean distance to the 15 nearest earlier children).
METHODS = {
    "novelty": ("all", "novelty", {"recent": 250}),
    "map_elites_curiosity": ("grid", "curiosity", {}),
    "fitness": ("all", "tournament", {"size": 16}),
    "random": ("all", "uniform", {}),
}


def run_engine(maze: str, method: str, seed: int, budget: int, workdir: Path, sigma: float) -> dict:
    kind, strategy, params = METHODS[method]
    db = workdir / f"{maze}-{method}-{seed}.db"
    cfg = load_config(None, {
        "sandbox.kind": "inprocess",  # the search is measured here; bench/sandbox.py measures the sandbox
        "task": maze, "db": str(db), "seed": seed, "budget.max_children": budget,
        "archive.kind": kind, "selection.strategy": strategy, "selection.params": params,
        "mutation.operator": "gaussian", "mutation.params": {"sigma": sigma}, "batch_size": 32, "max_in_flight": 4,
        "stats_every_seconds": 30.0,
    })
    summary = Campaign(cfg).run()
    con = sqlite3.connect(db)
    first = con.execute("SELECT MIN(id) FROM agents WHERE json_extract(metrics, '$.solved') >= 1").fetchone()[0]
    con.close()
    coverage = _grid_coverage(maze, db)
    return {"solved": first is not None, "evals": None if first is None else first + 1, "coverage": coverage,
            "seconds": summary.seconds}


def _grid_coverage(maze: str, db: Path) -> float:
    """Share of the task's (x, y) grid cells reached by any evaluated child (the same measure for every method)."""
    space = DescriptorSpace.from_dict(load_task(maze).descriptor_space)
    con = sqlite3.connect(db)
    rows = con.execute("SELECT descriptors FROM agents WHERE descriptors IS NOT NULL")
    xy = np.array([json.loads(d) for (d,) in rows])
    con.close()
    return _coverage_of(space, xy)


def _coverage_of(space: DescriptorSpace, xy: np.ndarray) -> float:
    if len(xy) == 0:
        return 0.0
    bins = np.asarray(space.bins)
    idx = np.floor((xy - space.lower) / (space.upper - space.lower) * bins).astype(int)
    idx = np.clip(idx, 0, bins - 1)
    return len({tuple(i) for i in idx}) / float(np.prod(bins))


def run_pyribs(maze: str, seed: int, budget: int, sigma: float) -> dict:
    from ribs.archives import GridArchive
    from ribs.emitters import GaussianEmitter
    from ribs.schedulers import Scheduler

    task = load_task(maze)
    space = DescriptorSpace.from_dict(task.descriptor_space)
    evaluate = load_evaluator(str(task.root))
    x0 = np.load(io.BytesIO(task.seed_files()[task.spec.params_file]))
    ranges = list(zip(space.lower, space.upper, strict=True))
    archive = GridArchive(solution_dim=len(x0), dims=list(space.bins), ranges=ranges, seed=seed)
    emitter = GaussianEmitter(archive, sigma=sigma, x0=x0, batch_size=32, seed=seed)
    scheduler = Scheduler(archive, [emitter])
    evals, solved_at, reached = 0, None, []
    started = time.perf_counter()
    while evals < budget and solved_at is None:
        sols = scheduler.ask()
        genomes = []
        for s in sols:
            buf = io.BytesIO()
            np.save(buf, np.asarray(s, dtype=np.float64))
            genomes.append({task.spec.params_file: buf.getvalue()})
        results = evaluate(genomes, task.evaluate_args)
        objective = np.array([r["fitness"] for r in results])
        measures = np.array([r["descriptors"] for r in results])
        reached.append(measures)
        for i, r in enumerate(results):
            if r["metrics"]["solved"] >= 1 and solved_at is None:
                solved_at = evals + i + 1
        evals += len(sols)
        scheduler.tell(objective, measures)
    coverage = _coverage_of(space, np.concatenate(reached))
    return {"solved": solved_at is not None, "evals": solved_at, "coverage": coverage,
            "seconds": time.perf_counter() - started}


def summarise(runs: list[dict]) -> dict:
    solved = [r["evals"] for r in runs if r["solved"]]
    return {
        "solved_runs": len(solved),
        "runs": len(runs),
        "median_evals_to_solve": statistics.median(solved) if solved else None,
        "mean_final_coverage": statistics.fmean(r["coverage"] for r in runs),
        "mean_seconds": statistics.fmean(r["seconds"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--mazes", nargs="+", default=["maze-medium", "maze-hard"])
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "pyribs_map_elites"])
    parser.add_argument("--smoke", action="store_true",
                        help="one seed, 64 children per run, every maze and method: checks the script; same keys")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.budget = 1, 64

    import ray

    ray.init(include_dashboard=False, logging_level="ERROR")
    report: dict = {"budget": args.budget, "seeds": args.seeds, "sigma": args.sigma, "smoke": args.smoke}
    with tempfile.TemporaryDirectory() as tmp:
        for maze in args.mazes:
            report[maze] = {}
            for method in args.methods:
                runs = []
                for seed in range(args.seeds):
                    if method == "pyribs_map_elites":
                        runs.append(run_pyribs(maze, seed, args.budget, args.sigma))
                    else:
                        runs.append(run_engine(maze, method, seed, args.budget, Path(tmp), args.sigma))
                    print(f"{maze} {method} seed {seed}: {runs[-1]}", flush=True)
                report[maze][method] = summarise(runs)
                Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
