"""Binpack evaluation speed: seconds per agent on the default instances, and the agent call's round trip.

    python bench/binpack_eval.py --out binpack_eval.json
    python bench/binpack_eval.py --out binpack_eval.json --baseline 2943acf   # also time that revision's evaluator
    python bench/binpack_eval.py --smoke --out binpack_eval.json              # CI: 50 items, a few calls

The evaluator runs each agent's ``priority`` in a process of its own (``sandboxes.agent.run_agent``):
5 instances x 1000 items are 5000 calls across a pipe. Writes, per agent (best fit, first fit, a
FunSearch-style heuristic): ``eval_s`` (median seconds per evaluation, process start included),
``eval_s_guarded`` (the same in a working folder like the runner's, whose files are checked after
every call), and with ``--baseline REV`` ``baseline_eval_s`` (that revision's evaluate.py, which
exec'd the agent in the evaluator's own process; null without it). Then ``call_us`` (median
microseconds per ``priority(item, bins)`` round trip for 1000 and for 10 bins, same CPU and
not, guarded and not) and ``start_ms`` (starting and loading an agent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EVALUATE = ROOT / "openended" / "tasks" / "binpack" / "evaluate.py"

AGENTS = {
    "best_fit": "def priority(item, bins):\n    return -(bins - item)\n",
    "first_fit": "import numpy as np\n\ndef priority(item, bins):\n    return -np.arange(len(bins), dtype=float)\n",
    "funsearch": ("import numpy as np\n\ndef priority(item, bins):\n    score = (bins - bins.max()) ** 2 / item\n"
                  "    score += bins ** 2 / item ** 2 + bins ** 2 / item ** 3\n"
                  "    score[bins > item] = -score[bins > item]\n    score[1:] -= score[:-1]\n    return score\n"),
}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _eval_seconds(evaluator, source: str, args: dict, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        [result] = evaluator.evaluate_batch([{"priority.py": source.encode()}], args)
        times.append(time.perf_counter() - started)
        assert result["valid"], result["feedback"]
    return statistics.median(times)


class _RunnerFolder:
    """A fresh working folder that is also $TMPDIR, as the runner gives each evaluation (run_agent guards it)."""

    def __enter__(self):
        self.saved = os.getcwd(), os.environ.get("TMPDIR")
        self.folder = tempfile.mkdtemp(prefix="eval-")
        os.chdir(self.folder)
        os.environ["TMPDIR"] = self.folder
        return self

    def __exit__(self, *exc):
        cwd, tmp = self.saved
        os.chdir(cwd)
        if tmp is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = tmp
        os.rmdir(self.folder)


def _call_us(run_agent, n_bins: int, calls: int, *, same_cpu: bool, guarded: bool) -> float:
    def measure() -> float:
        with run_agent({"priority.py": AGENTS["best_fit"].encode()}, "priority.py", timeout_s=600,
                       same_cpu=same_cpu) as agent:
            priority = agent.function("priority")
            bins = np.full(n_bins, 100.0)
            priority(1.0, bins)
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(calls):
                    priority(3.0, bins)
                samples.append((time.perf_counter() - started) / calls * 1e6)
            return statistics.median(samples)

    if guarded:
        with _RunnerFolder():
            return measure()
    return measure()


def _start_ms(run_agent, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with run_agent({"priority.py": b"import numpy as np\n" + AGENTS["best_fit"].encode()}, "priority.py",
                       timeout_s=60) as agent:
            agent.function("priority")
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="binpack evaluation speed")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="50 items and a few calls: checks the script; same keys")
    parser.add_argument("--baseline", metavar="REV", help="also time the binpack evaluate.py of this git revision")
    parser.add_argument("--repeats", type=int, default=5, help="evaluations per agent (median)")
    args = parser.parse_args()
    evaluator = _load(EVALUATE, "_bench_binpack_evaluate")
    baseline = None
    if args.baseline:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline}:openended/tasks/binpack/evaluate.py"],
                              check=True, capture_output=True, text=True).stdout
        path = Path(tempfile.mkdtemp(prefix="bench-binpack-")) / "evaluate.py"
        path.write_text(text)
        baseline = _load(path, "_bench_binpack_baseline")
    eval_args = {"items": 50, "instances": 1} if args.smoke else {}
    repeats = 1 if args.smoke else args.repeats
    calls = 20 if args.smoke else 1000
    per_agent = {}
    for name, source in AGENTS.items():
        row = {"eval_s": _eval_seconds(evaluator, source, eval_args, repeats)}
        with _RunnerFolder():
            row["eval_s_guarded"] = _eval_seconds(evaluator, source, eval_args, repeats)
        row["baseline_eval_s"] = _eval_seconds(baseline, source, eval_args, repeats) if baseline else None
        per_agent[name] = row
    run_agent = evaluator.run_agent
    call_us = {}
    for n_bins in (1000, 10):
        for same_cpu in (True, False):
            for guarded in (False, True):
                key = f"bins{n_bins}_{'same_cpu' if same_cpu else 'any_cpu'}{'_guarded' if guarded else ''}"
                call_us[key] = _call_us(run_agent, n_bins, calls, same_cpu=same_cpu, guarded=guarded)
    result = {"agents": per_agent, "call_us": call_us, "start_ms": _start_ms(run_agent, 3 if args.smoke else 10),
              "baseline": args.baseline, "cpus": os.cpu_count(), "smoke": args.smoke}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
