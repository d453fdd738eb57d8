"""Host-side validation of an evaluator's result JSON.

Result: ``{"fitness": float, "descriptors": [float, ...], "metrics": {...},
"feedback": "text", "valid": bool}``. Anything else is refused with a reason naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_FEEDBACK_CHARS = 4_000
MAX_METRICS_BYTES = 16_000


@dataclass(frozen=True, slots=True)
class CheckedResult:
    fitness: float
    descriptors: list[float]
    metrics: dict
    feedback: str


class InvalidResult(ValueError):
    """The evaluator's result breaks the contract; the message says which field and how."""


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResult(f"{what} is not a number: {value!r:.80}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidResult(f"{what} is not finite: {value}")
    return value


def check_result(result, n_descriptors: int) -> CheckedResult:
    """Validate one result dict; InvalidResult says what is wrong (including valid=false with its feedback)."""
    if not isinstance(result, dict):
        raise InvalidResult(f"result is not a JSON object: {type(result).__name__}")
    feedback = result.get("feedback") or ""
    if not isinstance(feedback, str):
        feedback = str(feedback)
    feedback = feedback[:MAX_FEEDBACK_CHARS]
    if result.get("valid", True) is not True:
        raise InvalidResult(f"evaluator marked the agent invalid: {feedback or '(no feedback)'}")
    fitness = _finite(result.get("fitness"), "fitness")
    descriptors = result.get("descriptors")
    if not isinstance(descriptors, list):
        raise InvalidResult(f"descriptors is not a list: {descriptors!r:.80}")
    if len(descriptors) != n_descriptors:
        raise InvalidResult(f"descriptors has length {len(descriptors)}, the task defines {n_descriptors}")
    descriptors = [_finite(d, f"descriptors[{i}]") for i, d in enumerate(descriptors)]
    metrics = result.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise InvalidResult(f"metrics is not an object: {metrics!r:.80}")
    try:
        encoded = json.dumps(metrics, allow_nan=False)
    except ValueError as exc:
        raise InvalidResult(f"metrics are not finite JSON: {exc}") from None
    if len(encoded) > MAX_METRICS_BYTES:
        raise InvalidResult(f"metrics take {len(encoded)} bytes, over the {MAX_METRICS_BYTES} cap")
    return CheckedResult(fitness, descriptors, metrics, feedback)
