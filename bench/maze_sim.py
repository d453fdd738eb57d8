"""Maze simulator speed: milliseconds per evaluation (400 steps) at a batch of 256 and of 1.

    python bench/maze_sim.py --out maze_sim.json
    python bench/maze_sim.py --smoke --out maze_sim.json    # CI: one repeat each (a second)

Writes ms_per_eval_batch_256 and ms_per_eval_batch_1 (target: about 1 ms amortised in a batch).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import openended.tasks


def _maze_sim():
    """The maze task's simulator module, loaded from its file (a task folder is not a package)."""
    path = Path(openended.tasks.__file__).parent / "maze" / "maze_sim.py"
    spec = importlib.util.spec_from_file_location("_bench_maze_sim", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


maze_sim = _maze_sim()


def ms_per_eval(batch: int, repeats: int = 5) -> float:
    maze = maze_sim.load_maze("hard")
    weights = np.random.default_rng(0).normal(size=(batch, maze_sim.PARAM_COUNT))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        maze_sim.simulate(maze, weights)
        times.append((time.perf_counter() - started) * 1e3 / batch)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="maze simulator speed")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="one repeat each: checks the script; same keys")
    args = parser.parse_args()
    repeats = (1, 1) if args.smoke else (5, 20)
    result = {"ms_per_eval_batch_256": ms_per_eval(256, repeats[0]), "ms_per_eval_batch_1": ms_per_eval(1, repeats[1]),
              "smoke": args.smoke}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
