"""The figures of one run from its events (see :mod:`peers.systems`), the same for every system."""

from __future__ import annotations

from typing import Any

from peers import scoring

BEST_KNOWN = {"circle-packing": 2.635}
# Evaluations until the best valid fitness reaches each level. circle-packing: fractions of the best known
# sum of radii (2.635); binpack (fitness = -excess %): excess levels below the best-fit seed's 4.565%.
THRESHOLDS: dict[str, dict[str, float]] = {
    "circle-packing": {f"{f:.2f}_of_best_known": f * 2.635 for f in (0.85, 0.90, 0.95)},
    "binpack": {f"excess_{e:.1f}": -e for e in (4.0, 3.0, 2.0)},
}
TOLERANCE = 1e-9  # the tasks' [fitness] tolerance: beating the seed means by more than this


def run_metrics(task: str, run: dict[str, Any]) -> dict[str, Any]:
    events = run["events"]
    seed_fitness = events[0]["fitness"] if events and not events[0]["model_child"] else None
    if seed_fitness is None:
        seed_fitness = scoring.score(task, scoring.seed_code(task))["fitness"]
    levels = {"exceed_seed": seed_fitness + TOLERANCE, **THRESHOLDS[task]}
    reached: dict[str, int | None] = dict.fromkeys(levels)
    best = None
    evaluations = 0
    seen = {scoring.normalised(task, scoring.seed_code(task))}
    children = valid = distinct = 0
    for event in events:
        if event["evaluated"]:
            evaluations += 1
        if event["valid"] and event["fitness"] is not None:
            best = event["fitness"] if best is None else max(best, event["fitness"])
            for name, level in levels.items():
                if reached[name] is None and best >= level:
                    reached[name] = evaluations
        key = scoring.normalised(task, event["code"]) if event["code"] is not None else None
        if event["model_child"]:
            children += 1
            valid += bool(event["valid"])
            distinct += key is not None and key not in seen
        if key is not None:
            seen.add(key)
    tokens = run["tokens_in"] + run["tokens_out"]
    return {"best": best, "seed": seed_fitness, "improved": best is not None and best > seed_fitness + TOLERANCE,
            "evaluations": evaluations, "evaluations_to": reached, "model_calls": run["calls"],
            "children": children, "valid_children": valid, "distinct_children": distinct,
            "valid_child_rate": valid / children if children else None,
            "distinct_child_rate": distinct / children if children else None,
            "tokens_in": run["tokens_in"], "tokens_out": run["tokens_out"],
            "tokens_per_valid_child": tokens / valid if valid else None,
            "output_tokens_per_valid_child": run["tokens_out"] / valid if valid else None,
            "wall_s": round(run["wall_s"], 1)}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summary(task: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds of one system on one task: best of bests, means of the rates and times, and per
    threshold the evaluations to reach it in each seed (None: not reached)."""
    bests = [r["best"] for r in runs if r["best"] is not None]
    return {
        "seeds": len(runs), "best": max(bests) if bests else None, "best_mean": _mean(list(bests)),
        "improved_seeds": sum(r["improved"] for r in runs),
        "evaluations_to": {name: [r["evaluations_to"][name] for r in runs] for name in runs[0]["evaluations_to"]}
        if runs else {},
        **{key: _mean([r[key] for r in runs]) for key in
           ("valid_child_rate", "distinct_child_rate", "tokens_per_valid_child", "output_tokens_per_valid_child",
            "wall_s", "model_calls", "evaluations")},
    }
