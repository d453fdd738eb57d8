"""Deceptive-maze benchmark: novelty-driven, fitness-only and random search through the engine,
with pyribs MAP-Elites as the peer baseline, on maze-medium and maze-hard.

    python bench/maze.py --out maze.json --seeds 10 --budget 50000
    python bench/maze.py --smoke --out maze.json    # CI: one seed, 64 children per run (about a minute)
    python bench/maze.py --inprocess --out maze.json --methods novelty --seeds 24   # screening
    python bench/maze.py --sandbox docker --out maze.json --methods novelty         # in Docker

``--inprocess`` replays the engine's reproducible mode in this process instead of running the
engine (no Ray, no store; all seeds of a maze and method in lockstep, each round's blocks
simulated in one call): the same blocks, the same random streams (the driver's generator for
parents and children's seeds, each child's own for its mutation), the same archive and selection,
so the same children and the same figures (``tests/tasks/test_maze.py`` checks a campaign child
for child), in about a tenth of the time. It covers the parameter genomes of this bench's methods
(one Gaussian operator, one root, no initial agents); the engine itself stays the reference.

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
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from openended.config import CampaignConfig, load_config
from openended.engine import Campaign
from openended.engine.ordering import Blocks
from openended.mutation.gaussian import dump_params, load_params
from openended.qd import DescriptorSpace, make_archive
from openended.qd.archive import FLOAT_NOISE
from openended.sandbox.inprocess import load_evaluator
from openended.selection import LineageCounts, select_parents
from openended.tasks import load_task

# A run is solved at its first child that ends within this distance of the exit (the maze's SOLVED_DISTANCE;
# its fitness is minus the distance).
SOLVED_DISTANCE = 5.0


def _solved(fitness: float) -> bool:
    return -fitness < SOLVED_DISTANCE


# Our engine's methods: (archive kind, selection strategy, selection params). "novelty" is the
# engine's default (the `all` archive and `novelty` selection with its default parameters).
# "fitness" draws a tournament of 16 from every child so far; "fitness_population" is novelty search's
# matched control: the same population (the 250 newest members), parents chosen by fitness instead.
METHODS: dict[str, tuple[str, str, dict]] = {
    "novelty": ("all", "novelty", {}),
    "map_elites_curiosity": ("grid", "curiosity", {}),
    "fitness": ("all", "tournament", {"size": 16}),
    "fitness_population": ("all", "tournament", {"size": 16, "recent": 250}),
    "random": ("all", "uniform", {}),
}


def schedule(staleness: int) -> dict:
    """Config overrides for the reproducible mode with ``staleness``.

    Before the engine had ``deterministic``, only one Ray task in flight was reproducible: that is
    what an older engine gets (its staleness is then the batch size)."""
    if "deterministic" in CampaignConfig.model_fields:
        return {"deterministic": True, "staleness": staleness, "batch_size": 32, "max_in_flight": 4}
    return {"max_in_flight": 1, "batch_size": staleness}


def run_engine(maze: str, method: str, seed: int, budget: int, workdir: Path, sigma: float, staleness: int,
               sandbox: str = "inprocess") -> dict:
    kind, strategy, params = METHODS[method]
    db = workdir / f"{maze}-{method}-{seed}.db"
    cfg = load_config(None, {
        # the search is measured here (bench/sandbox.py measures the sandbox); "docker" gives the same figures
        # where the image's numpy is the host's (image version 3), other campaigns where it rounds differently
        "sandbox.kind": sandbox,
        "task": maze, "db": str(db), "seed": seed, "budget.max_children": budget,
        "archive.kind": kind, "selection.strategy": strategy, "selection.params": params,
        "mutation.operator": "gaussian", "mutation.params": {"sigma": sigma}, "stats_every_seconds": 30.0,
        **schedule(staleness),
    })
    summary = Campaign(cfg).run()
    con = sqlite3.connect(db)
    first = con.execute("SELECT MIN(id) FROM agents WHERE -fitness < ?", (SOLVED_DISTANCE,)).fetchone()[0]
    con.close()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT descriptors, fitness FROM agents WHERE descriptors IS NOT NULL").fetchall()
    con.close()
    xy = np.array([json.loads(d) for d, _ in rows])
    fitness = np.array([f for _, f in rows], dtype=np.float64)
    return {"solved": first is not None, "evals": None if first is None else first + 1,
            **_grid_measures(maze, xy, fitness), "seconds": summary.seconds}


def replay(maze: str, method: str, seed: int, budget: int, sigma: float, staleness: int) -> list[dict]:
    """The engine's reproducible campaign (``run_engine``'s configuration) replayed in this process:
    every child evaluated, in id order, as ``{"id", "parent_id", "fitness", "descriptors", "solved"}``.

    What the engine does, step by step: child 0 is the task's seed (its proposal draws one seed from
    the driver's generator); children are then proposed in blocks of ``staleness // 2``, the block
    starting at child s from the archive holding exactly the outcomes of the children below
    s - block (:class:`~openended.engine.ordering.Blocks`): its parents drawn at once by the
    selection strategy, then one seed per child from the driver's generator, each child its parent
    plus ``sigma`` x N(0, 1) drawn from a generator seeded with its seed. No block is proposed once
    an applied outcome reaches the task's target; the children already proposed are still
    evaluated."""
    return replay_many(maze, method, [seed], budget, sigma, staleness)[0]


def replay_many(maze: str, method: str, seeds: list[int], budget: int, sigma: float,
                staleness: int) -> list[list[dict]]:
    """:func:`replay` for several seeds at once, in lockstep: each round simulates the next block of
    every unfinished campaign in one vectorised call (the simulator computes each robot alone, so
    each campaign is the one :func:`replay` gives alone), a few times faster than one at a time."""
    task = load_task(maze)
    if task.genome_kind != "params" or task.spec.initial_random:
        raise ValueError(f"--inprocess replays one-root parameter tasks only, not {maze}")
    evaluate = load_evaluator(str(task.root))
    steps = {seed: _replay_steps(task, method, seed, budget, sigma, staleness) for seed in seeds}
    asks = {seed: next(gen) for seed, gen in steps.items()}
    done: dict[int, list[dict]] = {}
    while asks:
        order = list(asks)
        results: list[dict] = evaluate([g for seed in order for g in asks[seed]],  # type: ignore[assignment]
                                       task.evaluate_args)
        start, asked = 0, asks
        asks = {}
        for seed in order:
            n = len(asked[seed])
            try:
                asks[seed] = steps[seed].send(results[start:start + n])
            except StopIteration as stop:
                done[seed] = stop.value
            start += n
    return [done[seed] for seed in seeds]


def _replay_steps(task: Any, method: str, seed: int, budget: int, sigma: float,
                  staleness: int) -> Generator[list[dict], list[dict], list[dict]]:
    """One campaign of :func:`replay`: yields each batch of genomes to evaluate, is sent their
    results, returns the children evaluated."""
    kind, strategy, params = METHODS[method]
    space = DescriptorSpace.from_dict(task.descriptor_space)
    archive = make_archive(kind, space=space, fitness_offset=task.fitness_lower, seed=seed,
                           tolerance=task.spec.fitness.tolerance, noise=FLOAT_NOISE)
    lineage = LineageCounts()
    rng = np.random.default_rng(seed)
    params_file = task.spec.params_file
    target = task.fitness_target
    blocks = Blocks(n_roots=1, staleness=staleness)
    rng.integers(2**63)  # the root's seed (the seed operator copies the task's seed and draws nothing)
    genomes: dict[int, np.ndarray] = {}
    pending: list[tuple[int, int | None, np.ndarray]] = [(0, None, load_params(task.seed_files(), params_file))]
    evaluated: list[dict] = []
    reached = False

    def apply(below: float) -> Generator[list[dict], list[dict], None]:
        nonlocal reached
        ready = [c for c in pending if c[0] < below]
        if not ready:
            return
        del pending[: len(ready)]
        results = yield [{params_file: dump_params(w)} for _, _, w in ready]
        for (agent_id, parent, weights), r in zip(ready, results, strict=True):
            if not r.get("valid", True):
                continue  # failed: stored, never archived
            genomes[agent_id] = weights
            added = archive.add(agent_id, float(r["fitness"]), r["descriptors"])
            if added.status == "new_cell" and parent is not None:
                lineage.note_discovery(parent)
            reached = reached or (target is not None and r["fitness"] >= target)
            evaluated.append({"id": agent_id, "parent_id": parent, "fitness": float(r["fitness"]),
                              "descriptors": list(r["descriptors"]), "solved": _solved(float(r["fitness"]))})

    next_id = 1
    while next_id < budget:
        yield from apply(blocks.applied_before(next_id))
        if reached:
            break
        n = min(blocks.size, budget - next_id)
        parents = select_parents(strategy, archive, lineage, rng, n=n, **params)
        for parent in parents.tolist():
            child_seed = int(rng.integers(2**63))
            noise = np.random.default_rng(child_seed).standard_normal(len(genomes[parent]))
            pending.append((next_id, parent, genomes[parent] + sigma * noise))
            lineage.note_child(parent, next_id)
            next_id += 1
    yield from apply(float("inf"))
    return evaluated


def run_inprocess(maze: str, method: str, seeds: list[int], budget: int, sigma: float, staleness: int) -> list[dict]:
    """``run_engine``'s figures for each seed, from :func:`replay_many` (seconds: the lockstep run's
    time shared out by the children each seed evaluated)."""
    started = time.perf_counter()
    runs = replay_many(maze, method, seeds, budget, sigma, staleness)
    seconds = time.perf_counter() - started
    total = max(1, sum(len(children) for children in runs))
    return [_figures(maze, children, seconds * len(children) / total) for children in runs]


def _figures(maze: str, children: list[dict], seconds: float) -> dict:
    first = next((c["id"] for c in children if c["solved"]), None)
    xy = np.array([c["descriptors"] for c in children])
    fitness = np.array([c["fitness"] for c in children], dtype=np.float64)
    return {"solved": first is not None, "evals": None if first is None else first + 1,
            **_grid_measures(maze, xy, fitness), "seconds": seconds}


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
            if _solved(float(r["fitness"])) and solved_at is None:
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
    parser.add_argument("--novelty-params", type=json.loads, default={},
                        help='selection parameters of the novelty method, e.g. \'{"recent": 500}\' (default: none)')
    parser.add_argument("--sandbox", default="inprocess", choices=["inprocess", "process", "docker"],
                        help="where the engine evaluates (default inprocess: the host's numpy, as --inprocess)")
    parser.add_argument("--inprocess", action="store_true",
                        help="replay the engine's reproducible mode in this process (same figures, ~10x faster)")
    parser.add_argument("--smoke", action="store_true",
                        help="one seed, 64 children per run, every maze and method: checks the script; same keys")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.budget, args.seed_list = 1, 64, None
    seeds = list(range(args.seeds)) if args.seed_list is None else args.seed_list
    METHODS["novelty"] = (*METHODS["novelty"][:2], dict(args.novelty_params))

    if not args.inprocess:
        import ray

        ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    report: dict = {"inprocess": args.inprocess, "sandbox": "replica" if args.inprocess else args.sandbox,
                    "novelty_params": args.novelty_params, "budget": args.budget,
                    "seeds": len(seeds), "seed_list": seeds,
                    "sigma": args.sigma, "staleness": args.staleness, "schedule": schedule(args.staleness),
                    "smoke": args.smoke}
    with tempfile.TemporaryDirectory() as tmp:
        for maze in args.mazes:
            report[maze] = {}
            for method in args.methods:
                runs = []
                if args.inprocess and method != "pyribs_map_elites":  # every seed at once, in lockstep
                    runs = run_inprocess(maze, method, seeds, args.budget, args.sigma, args.staleness)
                    for seed, run in zip(seeds, runs, strict=True):
                        print(f"{maze} {method} seed {seed}: {run}", flush=True)
                for seed in seeds if not runs else []:
                    if method == "pyribs_map_elites":
                        runs.append(run_pyribs(maze, seed, args.budget, args.sigma))
                    else:
                        runs.append(run_engine(maze, method, seed, args.budget, Path(tmp), args.sigma,
                                               args.staleness, args.sandbox))
                    print(f"{maze} {method} seed {seed}: {runs[-1]}", flush=True)
                report[maze][method] = summarise(runs, args.budget)
                Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
