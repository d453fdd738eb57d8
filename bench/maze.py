"""Deceptive-maze benchmark: novelty-driven, fitness-only and random search through the engine,
with pyribs MAP-Elites as the peer baseline, on maze-medium and maze-hard.

    python bench/maze.py --out maze.json --seeds 10 --budget 50000
    python bench/maze.py --smoke --out maze.json    # CI: one seed, 64 children per run (about a minute)

The engine runs in its reproducible mode (``deterministic = true``, staleness ``--staleness``,
default 64: blocks of 32 children, each proposed from every outcome but the previous block's),
so the figures do not depend on the machine's load: the same command gives the same numbers.

Per maze and method it writes solved_runs, runs, median_evals_to_solve and worst_evals_to_solve
(an unsolved run counts as the budget, so a median or worst equal to the budget means unsolved
runs), median_evals_to_solve_solved_only, mean_qd_score and mean_final_coverage. "Evaluations to
solve" counts children up to and including the first one that solved the maze (final distance
< 5). QD score and coverage are measured alike for every method on the task's grid (10-unit
cells) over every child evaluated until the run stopped (at the first solution or the budget):
coverage is the share of cells reached, QD score the sum over reached cells of (best fitness -
the task's fitness floor).
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

from openended.config import CampaignConfig, load_config
from openended.engine import Campaign
from openended.qd import DescriptorSpace
from openended.sandbox.inprocess import load_evaluator
from openended.tasks import load_task

# Our engine's methods: (archive kind, selection strategy, selection params). "novelty" is the
# engine's default (the `all` archive and `novelty` selection with its default parameters).
METHODS: dict[str, tuple[str, str, dict]] = {
    "novelty": ("all", "novelty", {}),
    "map_elites_curiosity": ("grid", "curiosity", {}),
    "fitness": ("all", "tournament", {"size": 16}),
    "random": ("all", "uniform", {}),
}


def schedule(staleness: int) -> dict:
    """Config overrides for the reproducible mode with ``staleness``.

    Before the engine had ``deterministic``, only one Ray task in flight was reproducible: that is
    what an older engine gets (its staleness is then the batch size)."""
    if "deterministic" in CampaignConfig.model_fields:
        return {"deterministic": True, "staleness": staleness, "batch_size": 32, "max_in_flight": 4}
    return {"max_in_flight": 1, "batch_size": staleness}


def run_engine(maze: str, method: str, seed: int, budget: int, workdir: Path, sigma: float, staleness: int) -> dict:
    kind, strategy, params = METHODS[method]
    db = workdir / f"{maze}-{method}-{seed}.db"
    cfg = load_config(None, {
        "sandbox.kind": "inprocess",  # the search is measured here; bench/sandbox.py measures the sandbox
        "task": maze, "db": str(db), "seed": seed, "budget.max_children": budget,
        "archive.kind": kind, "selection.strategy": strategy, "selection.params": params,
        "mutation.operator": "gaussian", "mutation.params": {"sigma": sigma}, "stats_every_seconds": 30.0,
        **schedule(staleness),
    })
    summary = Campaign(cfg).run()
    con = sqlite3.connect(db)
    first = con.execute("SELECT MIN(id) FROM agents WHERE json_extract(metrics, '$.solved') >= 1").fetchone()[0]
    con.close()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT descriptors, fitness FROM agents WHERE descriptors IS NOT NULL").fetchall()
    con.close()
    xy = np.array([json.loads(d) for d, _ in rows])
    fitness = np.array([f for _, f in rows], dtype=np.float64)
    return {"solved": first is not None, "evals": None if first is None else first + 1,
            **_grid_measures(maze, xy, fitness), "seconds": summary.seconds}


def _grid_measures(maze: str, xy: np.ndarray, fitness: np.ndarray) -> dict:
    """Coverage and QD score of every evaluated child on the task's (x, y) grid (the same measure for
    every method): the share of cells reached, and the sum over them of best fitness - the floor."""
    task = load_task(maze)
    space = DescriptorSpace.from_dict(task.descriptor_space)
    bins = np.asarray(space.bins)
    if len(xy) == 0:
        return {"coverage": 0.0, "qd_score": 0.0}
    idx = np.floor((xy - space.lower) / (space.upper - space.lower) * bins).astype(int)
    cells = np.ravel_multi_index(tuple(np.clip(idx, 0, bins - 1).T), tuple(bins))
    best = np.full(int(np.prod(bins)), -np.inf)
    np.maximum.at(best, cells, fitness)
    reached = np.isfinite(best)
    return {"coverage": float(reached.mean()), "qd_score": float(np.sum(best[reached] - task.fitness_lower))}


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
    evals, solved_at, reached, fitness = 0, None, [], []
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
        fitness.append(objective)
        for i, r in enumerate(results):
            if r["metrics"]["solved"] >= 1 and solved_at is None:
                solved_at = evals + i + 1
        evals += len(sols)
        scheduler.tell(objective, measures)
    return {"solved": solved_at is not None, "evals": solved_at,
            **_grid_measures(maze, np.concatenate(reached), np.concatenate(fitness)),
            "seconds": time.perf_counter() - started}


def summarise(runs: list[dict], budget: int) -> dict:
    """A method's figures on one maze; an unsolved run counts as ``budget`` evaluations."""
    solved = [r["evals"] for r in runs if r["solved"]]
    evals = [r["evals"] if r["solved"] else budget for r in runs]
    return {
        "solved_runs": len(solved),
        "runs": len(runs),
        "median_evals_to_solve": statistics.median(evals),
        "worst_evals_to_solve": max(evals),
        "median_evals_to_solve_solved_only": statistics.median(solved) if solved else None,
        "evals_to_solve": [r["evals"] for r in runs],  # per seed; None: unsolved within the budget
        "mean_qd_score": statistics.fmean(r["qd_score"] for r in runs),
        "mean_final_coverage": statistics.fmean(r["coverage"] for r in runs),
        "mean_seconds": statistics.fmean(r["seconds"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None,
                        help="these seeds instead of 0 .. SEEDS-1 (to measure part of a row)")
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--staleness", type=int, default=64,
                        help="the engine's reproducible mode: children proposed without their predecessors' outcomes")
    parser.add_argument("--mazes", nargs="+", default=["maze-medium", "maze-hard"])
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "pyribs_map_elites"])
    parser.add_argument("--smoke", action="store_true",
                        help="one seed, 64 children per run, every maze and method: checks the script; same keys")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.budget, args.seed_list = 1, 64, None
    seeds = list(range(args.seeds)) if args.seed_list is None else args.seed_list

    import ray

    ray.init(include_dashboard=False, logging_level="ERROR")
    report: dict = {"budget": args.budget, "seeds": len(seeds), "seed_list": seeds, "sigma": args.sigma,
                    "staleness": args.staleness, "schedule": schedule(args.staleness), "smoke": args.smoke}
    with tempfile.TemporaryDirectory() as tmp:
        for maze in args.mazes:
            report[maze] = {}
            for method in args.methods:
                runs = []
                for seed in seeds:
                    if method == "pyribs_map_elites":
                        runs.append(run_pyribs(maze, seed, args.budget, args.sigma))
                    else:
                        runs.append(run_engine(maze, method, seed, args.budget, Path(tmp), args.sigma,
                                               args.staleness))
                    print(f"{maze} {method} seed {seed}: {runs[-1]}", flush=True)
                report[maze][method] = summarise(runs, args.budget)
                Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
