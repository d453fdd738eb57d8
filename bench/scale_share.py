"""The engine's maze throughput as a share of the raw simulator's on the same cores (issue 18; ``bench/scale.py``
calls it).

``simulator_evals_per_s(seconds, batch)``: on the running Ray, one task per CPU simulates ``batch`` random
maze-medium controllers at a time (``maze_sim.simulate``, what the task's evaluator calls) for ``seconds``;
their evaluations per second together. ``engine_children_per_s(db, skip)``: a finished campaign's children per
second from its store's finish times, after its first ``skip`` children (imports, Ray workers starting, the
roots). ``share`` divides the two, the simulator measured before and after the campaign (the mean of the two).
``task_children(config)``: the children a campaign sends a Ray task (in the default reproducible mode a proposal
block, 32, not ``batch_size``); the simulator is measured at that size too (``..._at_task_size``).

Every process of it runs at the bench's niceness (``nice -n 19``): Ray's workers inherit it, and the docker
sandbox's runners take it too (they ran at the engine's 0 before, ahead of the niced raw simulator, which
flattered the share under load). The figure still moves with the other work on the machine: the simulator's own
rate moves 2x within minutes, so take the median of several runs.

    python bench/scale_share.py --out s.json            # the simulator alone on a local Ray of 2 CPUs (5 s)
    python bench/scale_share.py --children 3000 --out s.json   # the share itself: the simulator, a real
                                                        # maze-medium campaign (the defaults run.py uses), the
                                                        # simulator again, on one local Ray of 2 CPUs
    python bench/scale_share.py --children 3000 --free --out s.json   # the campaign in the free mode: its
                                                        # tasks carry the batch (64), not a block's half (32)
    python bench/scale_share.py --children 3000 --free --sandbox inprocess --out s.json   # the loop alone:
                                                        # evaluated in Ray's workers, on the host's numpy
    python bench/scale_share.py --children 3000 --staleness 128 --out s.json   # the reproducible mode at another
                                                        # staleness (blocks of half of it)
    python bench/scale_share.py --smoke --out s.json    # CI: 1 s
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import openended.tasks
from archive_db import ArchiveDB


def _maze_sim() -> Any:
    """The maze task's simulator module, loaded from its file (a task folder is not a package)."""
    path = Path(openended.tasks.__file__).parent / "maze" / "maze_sim.py"
    spec = importlib.util.spec_from_file_location("_scale_maze_sim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def _simulate_for(seconds: float, batch: int, seed: int) -> float:
    """Evaluations per second of this process simulating batches for ``seconds`` (after one untimed batch:
    the import and the first call's set-up are not the simulator's speed)."""
    sim = _maze_sim()
    maze = sim.load_maze("medium")
    rng = np.random.default_rng(seed)
    sim.simulate(maze, rng.normal(size=(batch, sim.PARAM_COUNT)))
    done, started = 0, time.perf_counter()
    while time.perf_counter() < started + seconds:
        sim.simulate(maze, rng.normal(size=(batch, sim.PARAM_COUNT)))
        done += batch
    return done / (time.perf_counter() - started)


def simulator_evals_per_s(seconds: float, batch: int) -> float:
    """Raw maze evaluations per second of one Ray task per CPU of the running Ray, together (each task's own
    rate, summed: they run at the same time)."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    remote = ray.remote(num_cpus=1)(_simulate_for)
    return float(sum(ray.get([remote.remote(seconds, batch, i) for i in range(cpus)])))


def engine_children_per_s(db: Path, skip: int) -> float:
    """A finished campaign's children per second after its first ``skip`` (its store's finish times)."""
    with ArchiveDB(db, readonly=True) as store:
        times = [r[0] for r in store.conn.execute(
            "SELECT finished_at FROM agents WHERE finish_seq IS NOT NULL ORDER BY finish_seq")]
    times = times[skip:]
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def share_run(children: int, sim_seconds: float, batch: int, db: Path, *, free: bool = False,
              sandbox: str = "auto", staleness: int | None = None) -> dict[str, Any]:
    """The share on the running Ray: the raw simulator, a real maze-medium campaign of ``children`` with the
    defaults ``run.py`` uses (seed 0, the task's novelty search, the auto sandbox unless ``sandbox`` names one),
    the raw simulator again."""
    import ray

    from openended.config import load_config
    from openended.engine import Campaign

    overrides = {"task": "maze-medium", "db": str(db), "seed": 0, "budget.max_children": children,
                 "budget.stop_at_target": False, "ray_address": ray.get_runtime_context().gcs_address,
                 "stats_every_seconds": 60.0, "deterministic": not free, "sandbox.kind": sandbox}
    if staleness is not None:
        overrides["staleness"] = staleness
    config = load_config(None, overrides)
    per_task = task_children(config)
    raw, at_task = [simulator_evals_per_s(sim_seconds, batch)], [simulator_evals_per_s(sim_seconds, per_task)]
    load = [round(os.getloadavg()[0], 1)]
    started = time.monotonic()
    summary = Campaign(config).run()
    seconds = time.monotonic() - started
    load.append(round(os.getloadavg()[0], 1))
    raw.append(simulator_evals_per_s(sim_seconds, batch))
    at_task.append(simulator_evals_per_s(sim_seconds, per_task))
    if summary.status != "finished":
        raise RuntimeError(f"the maze campaign did not finish: {summary}")
    engine = engine_children_per_s(db, min(500, children // 4))
    with ArchiveDB(db, readonly=True) as store:
        run = store.get_run() or {}
        sandbox = (run.get("state") or {}).get("sandbox")
    return {"maze_engine_share_of_simulator": round(engine / float(np.mean(raw)), 3),
            "maze_engine_children_per_s": round(engine, 1), "maze_simulator_evals_per_s": [round(r, 1) for r in raw],
            "children_per_task": per_task,
            "maze_engine_share_of_simulator_at_task_size": round(engine / float(np.mean(at_task)), 3),
            "maze_simulator_evals_per_s_at_task_size": [round(r, 1) for r in at_task],
            "children": children, "campaign_seconds": round(seconds, 1), "sandbox": sandbox, "load": load}


def task_children(config: Any) -> int:
    """Children per Ray task in a campaign of ``config`` (a batchable task): the batch size, or in the
    reproducible mode a proposal block (half the staleness) when that is smaller, as the dispatcher sends them."""
    from openended.engine.ordering import Blocks, deterministic_staleness

    if not config.deterministic:
        return int(config.batch_size)
    staleness = config.staleness or deterministic_staleness(max_in_flight=config.max_in_flight,
                                                            per_task=config.batch_size)
    return min(int(config.batch_size), Blocks(n_roots=0, staleness=staleness).size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the raw maze simulator's evaluations per second on a local Ray")
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="1 s instead of 5: checks the script; same keys")
    ap.add_argument("--batch", type=int, default=64, help="controllers per simulate() call (the campaign's batch)")
    ap.add_argument("--free", action="store_true", help="the campaign in the free mode (deterministic = false)")
    ap.add_argument("--sandbox", default="auto", choices=("auto", "docker", "process", "inprocess"),
                    help="where the campaign evaluates (inprocess with --free: the loop alone, no container)")
    ap.add_argument("--staleness", type=int, default=None, help="the campaign's staleness (default: its mode's)")
    ap.add_argument("--children", type=int, default=0, help="also run a maze campaign of this many children "
                    "between two simulator measures: the share itself")
    args = ap.parse_args(argv)
    import tempfile

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    sim_seconds = 1.0 if args.smoke else 5.0
    try:
        if args.children:
            with tempfile.TemporaryDirectory() as tmp:
                result: dict[str, Any] = share_run(args.children, sim_seconds, args.batch, Path(tmp) / "maze.db",
                                                           free=args.free, sandbox=args.sandbox,
                                                           staleness=args.staleness)
        else:
            result = {"maze_simulator_evals_per_s": round(simulator_evals_per_s(sim_seconds, args.batch), 1)}
    finally:
        ray.shutdown()
    result.update({"batch": args.batch, "smoke": args.smoke})
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
