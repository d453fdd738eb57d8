"""Evaluator of the circle-packing task; runs inside the sandbox (stdlib + numpy only).

``evaluate_batch(genomes, args) -> list[dict]``: one result per genome, in order.

A genome holds ``packing.py`` defining ``pack(n) -> (n, 3) array`` of rows ``[x, y, r]``. The
packing is judged strictly, with no tolerance: every radius positive, every circle inside the unit
square (``r <= x <= 1 - r``, the same for y) and no two circles overlapping (the distance between
centres at least the sum of the radii). Fitness is the sum of the radii; an invalid packing gives
``valid: false`` with feedback naming the first broken rule and the circles involved.

The agent's ``pack`` runs in a process of its own (``sandboxes.agent.run_agent``); its reply is
hostile data, decoded and checked here.
"""

from __future__ import annotations

import time

import numpy as np

from sandboxes.agent import AgentError, AgentTimeout, run_agent

CODE_FILE = "packing.py"
ENTRY_POINT = "pack"
DEFAULTS = {"n": 26, "max_seconds": 30.0}
BORDER = 1e-3  # a circle this close to a side counts as on the border (a descriptor only, never validity)


def check_packing(value, n: int) -> tuple[np.ndarray | None, str]:
    """The packing as an (n, 3) float array and "" when it is valid; else None and what is wrong."""
    try:
        circles = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        return None, f"{ENTRY_POINT} must return numbers, got {type(value).__name__}: {exc}"
    if circles.shape != (n, 3):
        return None, (f"{ENTRY_POINT} must return an array of shape ({n}, 3) of [x, y, r] rows, "
                      f"got shape {circles.shape}")
    if not np.isfinite(circles).all():
        bad = int(np.flatnonzero(~np.isfinite(circles).all(axis=1))[0])
        return None, f"circle {bad} has a value that is not finite: {circles[bad].tolist()}"
    x, y, r = circles[:, 0], circles[:, 1], circles[:, 2]
    if (r <= 0).any():
        bad = int(np.flatnonzero(r <= 0)[0])
        return None, f"circle {bad} has radius {float(r[bad])!r}: every radius must be > 0"
    outside = (x - r < 0) | (x + r > 1) | (y - r < 0) | (y + r > 1)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        return None, (f"circle {bad} (x={float(x[bad])!r}, y={float(y[bad])!r}, r={float(r[bad])!r}) is not inside "
                      "the unit square "
                      "(need r <= x <= 1 - r and r <= y <= 1 - r)")
    i, j = np.triu_indices(n, k=1)
    gap = np.hypot(x[i] - x[j], y[i] - y[j]) - (r[i] + r[j])
    if (gap < 0).any():
        k = int(np.argmin(gap))
        return None, (f"circles {int(i[k])} and {int(j[k])} overlap by {-gap[k]:.3g} (the distance between "
                      "their centres is less than the sum of their radii)")
    return circles, ""


def evaluate_one(files: dict[str, bytes], args: dict) -> dict:
    """The result dict of one agent (valid or not); its ``pack`` runs in a process of its own."""
    started = time.monotonic()
    n, budget = int(args["n"]), float(args["max_seconds"])
    try:
        with run_agent(files, CODE_FILE, timeout_s=budget) as agent:
            value = agent.call(ENTRY_POINT, n)
    except AgentTimeout:
        return _invalid(f"too slow: {ENTRY_POINT}({n}) did not return within {budget:g} s")
    except AgentError as exc:
        return _invalid(str(exc))
    circles, problem = check_packing(value, n)
    if circles is None:
        return _invalid(f"invalid packing: {problem}")
    x, y, r = circles[:, 0], circles[:, 1], circles[:, 2]
    total = float(r.sum())
    spread = float(r.std() / r.mean())
    wall = np.minimum.reduce([x - r, 1 - x - r, y - r, 1 - y - r])
    border = float((wall <= BORDER).mean())
    order = np.argsort(-r)
    feedback = (f"valid packing of {n} circles: sum of radii {total:.6f} (the best known is about 2.635). "
                f"Radii from {r.min():.4f} to {r.max():.4f} (mean {r.mean():.4f}); {border * 100:.0f}% of the "
                f"circles touch a side. Largest circles at " +
                ", ".join(f"({x[k]:.3f}, {y[k]:.3f}) r={r[k]:.4f}" for k in order[:3]) + ".")
    return {"fitness": total, "descriptors": [min(spread, 1.0), border],
            "metrics": {"sum_radii": total, "min_radius": float(r.min()), "max_radius": float(r.max()),
                        "radius_spread": spread, "border_share": border,
                        "seconds": round(time.monotonic() - started, 3)},
            "feedback": feedback, "valid": True}


def _invalid(reason: str) -> dict:
    return {"valid": False, "feedback": reason, "fitness": None, "descriptors": None, "metrics": {}}


def evaluate_batch(genomes: list[dict[str, bytes]], args: dict) -> list[dict]:
    """Evaluate each genome (``args`` override :data:`DEFAULTS`).

    Raises:
        ValueError: an unknown or malformed argument (the evaluator's configuration, not an agent's fault).
    """
    unknown = sorted(set(args or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown circle-packing argument(s) {unknown}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **(args or {})}
    if int(merged["n"]) < 2 or float(merged["max_seconds"]) <= 0:
        raise ValueError(f"circle-packing needs n >= 2 and max_seconds > 0, got {merged}")
    return [evaluate_one(files, merged) for files in genomes]
