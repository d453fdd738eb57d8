"""The engine's maze throughput as a share of the raw simulator's on the same cores (issue 18; ``bench/scale.py``
calls it).

``simulator_evals_per_s(seconds, batch)``: on the running Ray, one task per CPU simulates ``batch`` random
maze-medium controllers at a time (``maze_sim.simulate``, what the task's evaluator calls) for ``seconds``;
their evaluations per second together. ``engine_children_per_s(db, skip)``: a finished campaign's children per
second from its store's finish times, after its first ``skip`` children (imports, Ray workers starting, the
roots). ``share`` divides the two, the simulator measured before and after the campaign (the mean of the two).

    python bench/scale_share.py --out s.json            # the simulator alone on a local Ray of 2 CPUs (5 s)
    python bench/scale_share.py --smoke --out s.json    # CI: 1 s
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the raw maze simulator's evaluations per second on a local Ray")
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="1 s instead of 5: checks the script; same keys")
    ap.add_argument("--batch", type=int, default=64, help="controllers per simulate() call (the campaign's batch)")
    args = ap.parse_args(argv)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        rate = simulator_evals_per_s(1.0 if args.smoke else 5.0, args.batch)
    finally:
        ray.shutdown()
    result = {"maze_simulator_evals_per_s": round(rate, 1), "batch": args.batch, "smoke": args.smoke}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
