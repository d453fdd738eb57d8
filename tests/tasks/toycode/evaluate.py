"""Runs agent.py's statements (plain arithmetic) and scores where a and b end up. A program that
fails (an edit can use a name before it is set) is that agent's invalid result, never the batch's."""

import math


def _score(source: str) -> dict:
    scope: dict = {}
    try:
        exec(compile(source, "agent.py", "exec"), {"__builtins__": {}}, scope)
        a = min(20.0, max(-20.0, float(scope.get("a", 0))))
        b = min(20.0, max(-20.0, float(scope.get("b", 0))))
    except Exception as exc:  # noqa: BLE001 - any error is this agent's
        return {"valid": False, "feedback": f"{type(exc).__name__}: {exc}", "fitness": -100.0, "descriptors": [0, 0]}
    return {"fitness": max(-100.0, -math.hypot(a - 3, b - 3)), "descriptors": [a, b]}


def evaluate_batch(genomes, args):
    return [_score(files["agent.py"].decode()) for files in genomes]
