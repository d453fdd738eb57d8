"""Evaluator of the planar-arm repertoire task (stdlib + numpy only).

Library: ``evaluate_batch(genomes, args) -> list[dict]`` (one result per genome, in order).

A genome is a dict of file name -> bytes holding ``weights.npy``: the joint angles (radians) of a
planar arm of ``len(angles)`` links of length 1 (``args["links"]`` overrides the length, default 1).
Angles are clipped to [-pi, pi]. The i-th link points at the cumulative sum of the first i angles.
Fitness is minus the variance of the angles (0: every joint bent alike); descriptors are the end
effector's (x, y). This is pyribs' "arm repertoire" tutorial's domain.
"""

from __future__ import annotations

import io
import math

import numpy as np

PARAMS_FILE = "weights.npy"


def _invalid(reason: str) -> dict:
    return {"valid": False, "feedback": reason, "fitness": None, "descriptors": None, "metrics": {}}


def load_angles(files: dict[str, bytes], dof: int | None = None) -> np.ndarray:
    """The float64 joint angles of a genome; ValueError with a precise reason otherwise."""
    if PARAMS_FILE not in files:
        raise ValueError(f"genome has no {PARAMS_FILE} (files: {sorted(files) or 'none'})")
    data = files[PARAMS_FILE]
    if isinstance(data, str):
        data = data.encode("latin-1")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is the genome's fault
        raise ValueError(f"{PARAMS_FILE} is not a loadable .npy array: {type(exc).__name__}: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf" or arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{PARAMS_FILE} must hold a non-empty 1-D array of real numbers")
    if dof is not None and arr.size != dof:
        raise ValueError(f"{PARAMS_FILE} must hold {dof} joint angles, got {arr.size}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{PARAMS_FILE} holds non-finite angles")
    return arr


def arm(angles: np.ndarray, link: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(fitness (n,), end effector (n, 2)) of joint angles (n, dof), clipped to [-pi, pi]."""
    a = np.clip(angles, -math.pi, math.pi)
    fitness = -np.var(a, axis=1)
    cum = np.cumsum(a, axis=1)
    pos = np.stack([link * np.cos(cum).sum(axis=1), link * np.sin(cum).sum(axis=1)], axis=1)
    return fitness, pos


def evaluate_batch(genomes: list[dict[str, bytes]], args: dict) -> list[dict]:
    """One result per genome: ``{"fitness", "descriptors": [x, y], "metrics": {}, "valid": True}``.

    ``args``: ``dof`` (the expected number of angles, optional), ``link`` (link length, default 1).
    """
    args = dict(args or {})
    dof = args.get("dof")
    link = float(args.get("link", 1.0))
    results: list[dict] = [{} for _ in genomes]
    rows, index = [], []
    for i, files in enumerate(genomes):
        try:
            rows.append(load_angles(files, None if dof is None else int(dof)))
            index.append(i)
        except ValueError as exc:
            results[i] = _invalid(str(exc))
    by_len: dict[int, list[int]] = {}
    for j, r in enumerate(rows):
        by_len.setdefault(r.size, []).append(j)
    for js in by_len.values():
        fitness, pos = arm(np.stack([rows[j] for j in js]), link)
        for j, f, (x, y) in zip(js, fitness.tolist(), pos.tolist(), strict=True):
            results[index[j]] = {"fitness": f, "descriptors": [x, y], "metrics": {},
                                 "feedback": f"end effector at ({x:.2f}, {y:.2f}), angle variance {-f:.3f}",
                                 "valid": True}
    return results
