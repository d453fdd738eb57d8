"""Host-side validation of everything a sandbox sends back, before it reaches the archive or the store.

Result: ``{"fitness": float, "descriptors": [float, ...], "metrics": {...}, "feedback": "text",
"valid": bool}``. :func:`check_result` turns it into a :class:`CheckedResult` or refuses it with an
:class:`InvalidResult` whose message names the field (the child then fails with stage ``invalid``).

Limits on what a child may send:

- numbers: ``bool`` is not a number; an integer beyond the float range (``10**400`` is valid JSON)
  and NaN/infinity are refused; fitness must lie in the task's ``[fitness] lower/upper``, each
  descriptor within its bounds widened by :data:`DESCRIPTOR_TOLERANCE` times its range (values
  inside that margin are kept as given; the archive clips them into the edge cell);
- text (feedback, output tails, reasons): lone surrogates (``"\\ud800"``, valid JSON, refused by
  SQLite's text encoding) become U+FFFD, and the text is cut to its limit;
- metrics: a JSON object at most :data:`MAX_DEPTH` levels deep, of at most :data:`MAX_NODES`
  values and :data:`MAX_METRICS_BYTES` bytes, with string keys, finite floats, integers within
  64 bits and no lone surrogates (refused, naming the path: metrics are data, not prose);
- genome file names: :func:`openended.names.genome_path_problem`, the rule every genome source
  follows (a plain relative path inside the agent's folder).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openended.names import genome_path_problem

MAX_FEEDBACK_CHARS = 4_000
MAX_METRICS_BYTES = 16_000
MAX_TAIL_CHARS = 16_000  # stdout/stderr tails and reasons kept in the store
MAX_DEPTH = 32
MAX_NODES = 10_000
MAX_INT = 2**63  # JSON integers in metrics: |x| < MAX_INT
DESCRIPTOR_TOLERANCE = 1e-9  # relative to a descriptor's range (upper - lower)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the task declares a result may hold: fitness in [fitness_lower, fitness_upper] (None:
    unbounded on that side), descriptor i in [descriptor_lower[i], descriptor_upper[i]] (± tolerance)."""

    fitness_lower: float | None = None
    fitness_upper: float | None = None
    descriptor_lower: tuple[float, ...] | None = None
    descriptor_upper: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class CheckedResult:
    fitness: float
    descriptors: list[float]
    metrics: dict
    feedback: str


class InvalidResult(ValueError):
    """The evaluator's result breaks the contract; the message says which field and how."""


# ------------------------------------------------------------------------------------ text


def clean_text(value: object, limit: int = MAX_TAIL_CHARS, *, keep: str = "head") -> str:
    """``value`` as storable text: a non-string is shown by type (or ``str()`` when cheap), lone
    surrogates become U+FFFD, and the text is cut to ``limit`` characters (its head or its tail)."""
    if not isinstance(value, str):
        if value is None:
            return ""
        if isinstance(value, (bool, float)) or (isinstance(value, int) and abs(value) < 10**100):
            value = str(value)
        else:
            value = f"<{type(value).__name__}>"
    text = value[:limit] if keep == "head" else value[-limit:] if limit else ""
    if _has_surrogate(text):  # paired surrogates (two code points) join; lone ones are replaced
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ------------------------------------------------------------------------------------ numbers


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResult(f"{what} is not a number: {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        assert isinstance(value, int)
        raise InvalidResult(f"{what} is an integer of {value.bit_length()} bits, beyond the float range") from None
    if not math.isfinite(number):
        raise InvalidResult(f"{what} is not finite: {number}")
    return number


def _show(value: object) -> str:
    """A short, storable picture of a value of unknown size."""
    if isinstance(value, str):
        return repr(clean_text(value, 80))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return clean_text(value, 80)
    if isinstance(value, (bool, type(None))):
        return repr(value)
    return f"<{type(value).__name__}>"


def _bounded(value: float, what: str, lower: float | None, upper: float | None, tolerance: float = 0.0) -> float:
    if lower is not None and value < lower - tolerance:
        raise InvalidResult(f"{what} = {value!r} is below the task's lower bound {lower!r}")
    if upper is not None and value > upper + tolerance:
        raise InvalidResult(f"{what} = {value!r} is above the task's upper bound {upper!r}")
    return value


# ------------------------------------------------------------------------------------ JSON


def check_json(value: object, what: str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """A plain-JSON copy of ``value`` (dicts with str keys, lists, str, finite float, int within 64
    bits, bool, None) within ``max_depth`` levels, :data:`MAX_NODES` values and ``max_bytes``
    bytes; InvalidResult naming the path of the first offending value."""
    count = 0

    def walk(v: object, path: str, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise InvalidResult(f"{what} holds more than {MAX_NODES} values")
        if depth > max_depth:
            raise InvalidResult(f"{path} is nested deeper than {max_depth} levels")
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int):
            if not -MAX_INT < v < MAX_INT:
                raise InvalidResult(f"{path} is an integer beyond 64 bits ({v.bit_length()} bits)")
            return int(v)
        if isinstance(v, float):
            if not math.isfinite(v):
                raise InvalidResult(f"{path} is not finite: {v}")
            return float(v)
        if isinstance(v, str):
            if len(v) > max_bytes:
                raise InvalidResult(f"{path} is a string of {len(v)} characters, over the {max_bytes} cap")
            if _has_surrogate(v):
                raise InvalidResult(f"{path} holds a lone surrogate (not encodable text)")
            return str(v)
        if isinstance(v, Mapping):
            out = {}
            for k, item in v.items():
                if not isinstance(k, str):
                    raise InvalidResult(f"{path} has a key that is not a string: {_show(k)}")
                if _has_surrogate(k):
                    raise InvalidResult(f"{path} has a key with a lone surrogate: {clean_text(k, 80)!r}")
                out[str(k)] = walk(item, f"{path}[{clean_text(k, 40)!r}]", depth + 1)
            return out
        if isinstance(v, (list, tuple)):
            return [walk(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(v)]
        raise InvalidResult(f"{path} is not a JSON value: {_show(v)}")

    checked = walk(value, what, 0)
    size = len(json.dumps(checked, allow_nan=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise InvalidResult(f"{what} take {size} bytes, over the {max_bytes} cap")
    return checked


# ------------------------------------------------------------------------------------ results


def check_result(result: object, n_descriptors: int, bounds: Bounds | None = None) -> CheckedResult:
    """Validate one result dict against the contract and ``bounds``; InvalidResult says what is
    wrong (including valid=false with its feedback)."""
    if not isinstance(result, Mapping):
        raise InvalidResult(f"result is not a JSON object: {type(result).__name__}")
    bounds = bounds or Bounds()
    feedback = clean_text(result.get("feedback") or "", MAX_FEEDBACK_CHARS)
    if result.get("valid", True) is not True:
        raise InvalidResult(f"evaluator marked the agent invalid: {feedback or '(no feedback)'}")
    fitness = _bounded(_number(result.get("fitness"), "fitness"), "fitness", bounds.fitness_lower,
                       bounds.fitness_upper)
    raw = result.get("descriptors")
    if not isinstance(raw, (list, tuple)):
        raise InvalidResult(f"descriptors is not a list: {_show(raw)}")
    if len(raw) != n_descriptors:
        raise InvalidResult(f"descriptors has length {len(raw)}, the task defines {n_descriptors}")
    descriptors = [_number(d, f"descriptors[{i}]") for i, d in enumerate(raw)]
    lows, highs = bounds.descriptor_lower, bounds.descriptor_upper
    if lows is not None and highs is not None:
        for i, (d, lo, hi) in enumerate(zip(descriptors, lows, highs, strict=True)):
            _bounded(d, f"descriptors[{i}]", lo, hi, DESCRIPTOR_TOLERANCE * (hi - lo))
    metrics = result.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise InvalidResult(f"metrics is not an object: {_show(metrics)}")
    metrics = check_json(metrics, "metrics", max_bytes=MAX_METRICS_BYTES)
    return CheckedResult(fitness, descriptors, metrics, feedback)


def check_files(files: object) -> dict[str, bytes]:
    """A genome as sent by a worker (an operator's or a model's child): ``{name: bytes}`` whose names pass
    :func:`~openended.names.genome_path_problem`; InvalidResult naming the file otherwise."""
    if not isinstance(files, Mapping):
        raise InvalidResult(f"genome is not a mapping of file names to bytes: {_show(files)}")
    for name, content in files.items():
        problem = genome_path_problem(name)
        if problem is not None:
            raise InvalidResult(f"genome {clean_text(problem, 400)}")
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise InvalidResult(f"genome file {name!r} is not bytes: {type(content).__name__}")
    return dict(files)



# ------------------------------------------------------------------------------- acting results

MAX_OUTPUT_FILES = 1_000


@dataclass(frozen=True, slots=True)
class ActingResult:
    """What a scorer stage's acting evaluation gave for one agent: the files it hands the scorer, its
    metrics and feedback (merged under the scorer's). Any fitness or descriptors in it are ignored."""

    outputs: dict[str, bytes]
    metrics: dict
    feedback: str


def check_acting(result: object) -> ActingResult:
    """An acting evaluation's result: ``{"outputs": {name: text}, "metrics": {...}, "feedback": "text"}``
    (names as genome file names, text UTF-8); InvalidResult naming the field otherwise, or when the
    acting evaluator marked the agent invalid."""
    if not isinstance(result, Mapping):
        raise InvalidResult(f"the acting result is not a JSON object: {type(result).__name__}")
    feedback = clean_text(result.get("feedback") or "", MAX_FEEDBACK_CHARS)
    if result.get("valid", True) is not True:
        raise InvalidResult(f"the acting evaluator marked the agent invalid: {feedback or '(no feedback)'}")
    raw = result.get("outputs")
    if not isinstance(raw, Mapping):
        raise InvalidResult(f"the acting result's outputs is not an object of file names to text: {_show(raw)}")
    if len(raw) > MAX_OUTPUT_FILES:
        raise InvalidResult(f"the acting result has {len(raw)} outputs, over the {MAX_OUTPUT_FILES} cap")
    outputs: dict[str, bytes] = {}
    for name, text in raw.items():
        problem = genome_path_problem(name)
        if problem is not None:
            raise InvalidResult(f"the acting result's output {clean_text(problem, 400)}")
        if not isinstance(text, str) or _has_surrogate(text):
            raise InvalidResult(f"the acting result's output {name!r} is not text: {_show(text)}")
        outputs[name] = text.encode("utf-8")
    metrics = result.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise InvalidResult(f"the acting result's metrics is not an object: {_show(metrics)}")
    return ActingResult(outputs, check_json(metrics, "metrics", max_bytes=MAX_METRICS_BYTES), feedback)
