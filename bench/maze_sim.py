"""Maze simulator speed: milliseconds per evaluation (400 steps) at a batch of 256 and of 1.

    python bench/maze_sim.py --out maze_sim.json

Writes ms_per_eval_batch_256 and ms_per_eval_batch_1 (target: about 1 ms amortised in a batch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "openended" / "tasks" / "maze"))

from maze_sim import PARAM_COUNT, load_maze, simulate  # noqa: E402


def ms_per_eval(batch: int, repeats: int = 5) -> float:
    maze = load_maze("hard")
    weights = np.random.default_rng(0).normal(size=(batch, PARAM_COUNT))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        simulate(maze, weights)
        times.append((time.perf_counter() - started) * 1e3 / batch)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="maze simulator speed")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = {"ms_per_eval_batch_256": ms_per_eval(256), "ms_per_eval_batch_1": ms_per_eval(1, repeats=20)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
