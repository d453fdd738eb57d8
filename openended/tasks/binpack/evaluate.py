"""Evaluator of the online bin-packing task (FunSearch style); runs inside the sandbox (stdlib + numpy only).

Library: ``evaluate_batch(genomes, args) -> list[dict]`` (one result per genome, in order).
CLI:     ``python evaluate.py --out OUT.json [--arg key=value ...] AGENT_DIR [AGENT_DIR ...]``

A genome holds ``priority.py`` defining ``priority(item: float, bins: np.ndarray) -> np.ndarray``.
Items of fixed instances (Weibull sizes, shape 3 and scale 45, rounded and clipped to
[1, capacity], as FunSearch's Weibull benchmark) arrive one at a time; each goes to the feasible
bin with the highest priority (ties: the lowest index), exactly as in FunSearch's
``online_binpack``. Fitness is minus the mean excess, in percent, of the bins used over the L1
lower bound ``ceil(sum(items) / capacity)`` (0 would be perfect). Descriptors describe what the
heuristic does, not how well: the share of items put into the fullest bin that fits them, and
the share of items put into a new (empty) bin although an opened one had room.

The agent's ``priority`` never runs in this process: ``sandboxes.agent.run_agent`` loads it in a
fresh interpreter of its own and every call crosses a pipe (its prints go nowhere); the packing
state, the checks of every reply and the score stay here. Any fault of the agent (no file, syntax
error, exception, wrong output shape, NaN, too slow, its process dying, a malformed reply) gives
``valid: false`` with a precise feedback line; the evaluator itself never crashes on an agent. An
agent that changes the evaluator's working folder raises ``ForgedResult`` out of
``evaluate_batch`` (the runner fails the evaluation with kind ``forged_result``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

try:  # the runner registers sandboxes.agent in the sandbox; on the host it is installed or beside us
    from sandboxes.agent import AgentError, AgentTimeout, run_agent
except ModuleNotFoundError:
    import importlib.util

    _LIBRARY = Path(__file__).resolve().parent.parent.parent.parent / "sandboxes" / "agent.py"  # a checkout
    _spec = importlib.util.spec_from_file_location("sandboxes.agent", _LIBRARY)
    if _spec is None or _spec.loader is None or not _LIBRARY.is_file():
        raise
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["sandboxes.agent"] = _module
    _spec.loader.exec_module(_module)
    from sandboxes.agent import AgentError, AgentTimeout, run_agent

CODE_FILE = "priority.py"
ENTRY_POINT = "priority"
DEFAULTS = {
    "instances": 5,     # number of instances
    "items": 1000,      # items per instance
    "seed": 0,          # instance i is drawn from np.random.default_rng([seed, i])
    "capacity": 100,
    "shape": 3.0,       # Weibull shape and scale (FunSearch's Weibull benchmark)
    "scale": 45.0,
    "max_seconds": 20.0,  # the agent's wall-clock budget (its start, load and calls); the sandbox's is the hard limit
}

_INSTANCES: dict[tuple, list[np.ndarray]] = {}


def instances(args: dict) -> list[np.ndarray]:
    """The fixed item-size arrays (float64, integers in [1, capacity]) for these arguments."""
    key = (int(args["instances"]), int(args["items"]), int(args["seed"]), float(args["capacity"]),
           float(args["shape"]), float(args["scale"]))
    if key not in _INSTANCES:
        count, n, seed, capacity, shape, scale = key
        _INSTANCES[key] = [
            np.clip(np.round(np.random.default_rng([seed, i]).weibull(shape, n) * scale), 1, capacity)
            for i in range(count)
        ]
    return _INSTANCES[key]


def l1_bound(items: np.ndarray, capacity: float) -> int:
    """The L1 lower bound on the number of bins: ceil(total size / capacity)."""
    return int(math.ceil(float(items.sum()) / capacity - 1e-9))


def _too_slow(budget: float, where: str) -> str:
    return f"too slow: packing exceeded the time budget of {budget:g}s (stopped {where}); keep {ENTRY_POINT} vectorised"


def pack(priority, items: np.ndarray, capacity: float, *, instance: int = 0, budget: float = math.inf) -> dict:
    """Pack ``items`` online with ``priority`` (the agent's, through run_agent); counts of bins and choices.

    Every item could need its own bin, so there are ``len(items)`` bins, all empty at first;
    ``bins`` holds their remaining capacities and the agent sees those of the feasible ones.
    """
    bins = np.full(len(items), float(capacity))
    fullest = new_bin = choices = 0
    for k, item in enumerate(items.tolist()):
        valid = np.flatnonzero(bins >= item)  # never empty: an unused bin has full capacity
        feasible = bins[valid]  # a copy, and the agent gets a copy of it
        where = f"item {k} (size {item:g}) of instance {instance}, {len(valid)} feasible bins"
        try:
            scores = priority(item, feasible)
        except AgentTimeout:
            raise AgentError(_too_slow(budget, f"at {where}")) from None
        except AgentError as exc:
            raise AgentError(f"{exc} (on {where})") from None
        try:
            scores = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise AgentError(f"{ENTRY_POINT} must return numbers, returned {type(scores).__name__} "
                             f"(on {where}): {exc}") from None
        if scores.shape != feasible.shape:
            raise AgentError(
                f"{ENTRY_POINT} must return one score per feasible bin, shape {feasible.shape}; "
                f"returned shape {scores.shape} (on {where})"
            )
        if np.isnan(scores).any():
            raise AgentError(f"{ENTRY_POINT} returned NaN for {int(np.isnan(scores).sum())} of the bins "
                             f"(on {where})")
        choice = valid[int(np.argmax(scores))]
        if feasible.min() < capacity:  # an opened bin fits: a real choice between bins
            choices += 1
            fullest += bool(bins[choice] == feasible.min())
            new_bin += bool(bins[choice] == capacity)
        bins[choice] -= item
    used = bins < capacity
    fills = (capacity - bins[used]) / capacity
    return {"bins": int(used.sum()), "choices": choices, "fullest": fullest, "new_bin": new_bin,
            "full_bins": int((bins[used] == 0).sum()), "fill_sum": float(fills.sum())}


def evaluate_one(files: dict[str, bytes], args: dict) -> dict:
    """The result dict of one agent (valid or not); its ``priority`` runs in a process of its own.

    Raises:
        ForgedResult: the agent changed the evaluator's files (from run_agent; the runner fails
            the evaluation with kind forged_result).
    """
    started = time.monotonic()
    budget = float(args["max_seconds"])
    try:
        with run_agent(files, CODE_FILE, timeout_s=budget) as agent:
            priority = agent.function(ENTRY_POINT)
            capacity = float(args["capacity"])
            per_instance = []
            totals = {"bins": 0, "choices": 0, "fullest": 0, "new_bin": 0, "full_bins": 0, "fill_sum": 0.0}
            bound = 0
            with np.errstate(all="ignore"):  # inf and NaN are judged from the scores, not warned about
                for i, items in enumerate(instances(args)):
                    stats = pack(priority, items, capacity, instance=i, budget=budget)
                    lb = l1_bound(items, capacity)
                    per_instance.append(100.0 * (stats["bins"] - lb) / lb)
                    bound += lb
                    for key in totals:
                        totals[key] += stats[key]
    except AgentTimeout:  # while starting and loading: pack words its own
        return _invalid(_too_slow(budget, f"while loading {CODE_FILE}"))
    except AgentError as exc:
        return _invalid(str(exc))
    excess = float(np.mean(per_instance))
    choices = max(totals["choices"], 1)
    fullest_share = totals["fullest"] / choices
    new_bin_share = totals["new_bin"] / choices
    mean_fill = totals["fill_sum"] / totals["bins"]
    feedback = (
        f"{len(per_instance)} instances: {totals['bins']} bins used vs lower bound {bound} "
        f"({excess:.2f}% excess; 0% is perfect). When an opened bin fitted the item, it went into the "
        f"fullest one {100 * fullest_share:.0f}% of the time and into a new bin {100 * new_bin_share:.0f}% "
        f"of the time; bins ended {100 * mean_fill:.1f}% full on average."
    )
    return {
        "fitness": -excess,
        "descriptors": [fullest_share, new_bin_share],
        "metrics": {
            "excess_pct": excess,
            "excess_pct_per_instance": [round(e, 4) for e in per_instance],
            "bins": totals["bins"],
            "lower_bound": bound,
            "fullest_share": fullest_share,
            "new_bin_share": new_bin_share,
            "mean_fill": mean_fill,
            "full_bins_share": totals["full_bins"] / totals["bins"],
            "seconds": round(time.monotonic() - started, 3),
        },
        "feedback": feedback,
        "valid": True,
    }


def _invalid(reason: str) -> dict:
    return {"valid": False, "feedback": reason, "fitness": None, "descriptors": None, "metrics": {}}


def evaluate_batch(genomes: list[dict[str, bytes]], args: dict) -> list[dict]:
    """Evaluate each genome on the same fixed instances (``args`` override :data:`DEFAULTS`).

    Returns one result per genome: ``{"fitness": -excess_pct, "descriptors": [fullest_share,
    new_bin_share], "metrics", "feedback", "valid": True}`` or an invalid result with its reason.

    Raises:
        ValueError: an unknown or malformed argument (the evaluator's configuration, not an agent's fault).
    """
    unknown = sorted(set(args or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown binpack argument(s) {unknown}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **(args or {})}
    if int(merged["instances"]) < 1 or int(merged["items"]) < 1 or float(merged["capacity"]) <= 0:
        raise ValueError(f"binpack needs instances >= 1, items >= 1 and capacity > 0, got {merged}")
    return [evaluate_one(files, merged) for files in genomes]


def _read_agent(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _parse_arg(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--arg expects key=value, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate bin-packing agents (folders holding priority.py).")
    parser.add_argument("--out", required=True, help="where to write the JSON list of results")
    parser.add_argument("--arg", action="append", default=[], type=_parse_arg, metavar="KEY=VALUE",
                        help=f"evaluation argument, e.g. items=200 (repeatable; known: {', '.join(DEFAULTS)})")
    parser.add_argument("agents", nargs="+", help="agent folders")
    ns = parser.parse_args(argv)
    genomes = [_read_agent(Path(a)) if Path(a).is_dir() else {} for a in ns.agents]
    results = evaluate_batch(genomes, dict(ns.arg))
    for agent, res in zip(ns.agents, results, strict=True):
        if not Path(agent).is_dir():
            res.update(_invalid(f"agent folder {agent} does not exist"))
    Path(ns.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
