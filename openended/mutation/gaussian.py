"""LLM-free operators for parameter genomes: a parameter file (1-D float64 ``.npy``) plus a fixed controller.

Every function is deterministic given the generator state: the same seed gives identical bytes.
"""

from __future__ import annotations

import io

import numpy as np

from openended.names import Files


def load_params(files: Files, params_file: str = "weights.npy") -> np.ndarray:
    """The parameter vector stored in ``files[params_file]`` as a 1-D float64 array.

    Raises:
        ValueError: naming the file if it is missing, unloadable, not 1-D numeric, or holds
            non-finite values.
    """
    if params_file not in files:
        raise ValueError(f"parameter file {params_file!r} missing from genome (files: {sorted(files)})")
    try:
        array = np.load(io.BytesIO(files[params_file]), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad genome
        raise ValueError(f"parameter file {params_file!r} is not a loadable .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        shape = getattr(array, "shape", None)
        raise ValueError(f"parameter file {params_file!r} must hold a 1-D array, got shape {shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"parameter file {params_file!r} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"parameter file {params_file!r} holds non-finite values (NaN or inf)")
    return array


def dump_params(array: np.ndarray) -> bytes:
    """``np.save`` bytes of ``array`` as a 1-D float64 array."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.asarray(array, dtype=np.float64).ravel()), allow_pickle=False)
    return buf.getvalue()


def gaussian(files: Files, rng: np.random.Generator, *, sigma: float, params_file: str = "weights.npy") -> Files:
    """Child = parent + ``sigma`` * N(0, 1) per weight; every other file is copied unchanged.

    Raises:
        ValueError: if the parameter file is missing or bad, or ``sigma`` is negative / non-finite.
    """
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    parent = load_params(files, params_file)
    child = parent + sigma * rng.standard_normal(parent.shape[0])
    out = dict(files)
    out[params_file] = dump_params(child)
    return out


def random_params(rng: np.random.Generator, *, count: int, scale: float, params_file: str = "weights.npy") -> Files:
    """A fresh genome: ``count`` weights drawn from N(0, ``scale``**2)."""
    count = int(count)
    scale = float(scale)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    return {params_file: dump_params(scale * rng.standard_normal(count))}
