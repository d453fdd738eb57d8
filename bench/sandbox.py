"""Sandbox benchmark: per-evaluation overhead of each sandbox, and the maze through the real engine.

    python bench/sandbox.py --out sandbox.json [--n 200] [--maze-budget 6000]
    python bench/sandbox.py --smoke --out sandbox.json    # CI: 5 evaluations per mode, 64 maze children

Writes pool_p50_ms, pool_p95_ms, fresh_p50_ms, fresh_p95_ms (one trivial evaluation, host side,
start to result), docker_run_cli_p50_ms (`docker run --rm --network none IMAGE python3 -c pass`
for reference), process_p50_ms, and maze_evals_per_s_docker_pool / maze_evals_per_s_process
(maze-medium children per second through a real campaign, Ray and the store included).
Targets: pool p50 <= 80 ms; fresh p50 <= 300 ms; docker pool maze within 2x of process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from openended.config import load_config
from openended.engine import Campaign
from openended.sandbox import Limits, SandboxSpec
from openended.sandbox.docker_sandbox import DockerSandbox
from openended.sandbox.process import ProcessSandbox

TRIVIAL = Path(__file__).resolve().parent / "tasks" / "trivial"
IMAGE = "openended-sandbox:latest"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def time_box(box, n: int) -> list[float]:
    agent = {"agent.py": b"x = 1\n"}
    box.evaluate([agent], {})  # warm-up: the pool's container start is not per evaluation
    times = []
    for _ in range(n):
        started = time.perf_counter()
        out = box.evaluate([agent], {})
        times.append(time.perf_counter() - started)
        assert out.failure_kind is None, out.reason
    return times


def docker_cli(n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", IMAGE, "python3", "-c", "pass"], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def maze_rate(kind: str, budget: int, workdir: Path) -> float:
    cfg = load_config(None, {"task": "maze-medium", "db": str(workdir / f"maze-{kind}.db"), "seed": 3,
                             "budget.max_children": budget, "budget.stop_at_target": False,
                             "sandbox.kind": kind, "stats_every_seconds": 30.0})
    started = time.perf_counter()
    summary = Campaign(cfg).run()
    seconds = time.perf_counter() - started
    assert summary.children_failed == 0, summary.line()
    return summary.children_done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=200, help="evaluations per sandbox mode")
    parser.add_argument("--maze-budget", type=int, default=6000)
    parser.add_argument("--smoke", action="store_true",
                        help="5 evaluations per mode and 64 maze children: checks the script; same keys")
    args = parser.parse_args()
    fresh_n, cli_n = max(20, args.n // 4), max(10, args.n // 10)
    if args.smoke:
        args.n, args.maze_budget, fresh_n, cli_n = 5, 64, 3, 2

    limits = Limits(timeout_s=10, memory_mb=256)
    result: dict = {"n": args.n, "smoke": args.smoke}
    pool = DockerSandbox(SandboxSpec(kind="docker", mode="pool", limits=limits, campaign_label="bench"), str(TRIVIAL))
    fresh = DockerSandbox(SandboxSpec(kind="docker", mode="fresh", limits=limits, campaign_label="bench"), str(TRIVIAL))
    process = ProcessSandbox(SandboxSpec(kind="process", limits=limits), str(TRIVIAL))
    try:
        result["pool_p50_ms"], result["pool_p95_ms"] = _percentiles(time_box(pool, args.n))
        result["fresh_p50_ms"], result["fresh_p95_ms"] = _percentiles(time_box(fresh, fresh_n))
        result["process_p50_ms"], result["process_p95_ms"] = _percentiles(time_box(process, args.n))
    finally:
        for box in (pool, fresh, process):
            box.close()
    result["docker_run_cli_p50_ms"] = _percentiles(docker_cli(cli_n))[0]
    with tempfile.TemporaryDirectory() as tmp:
        result["maze_evals_per_s_docker_pool"] = maze_rate("docker", args.maze_budget, Path(tmp))
        result["maze_evals_per_s_process"] = maze_rate("process", args.maze_budget, Path(tmp))
    result["maze_docker_over_process"] = result["maze_evals_per_s_process"] / result["maze_evals_per_s_docker_pool"]
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
