"""The descriptor space and its measurement grid, and the checks on the numbers an archive takes.

:class:`DescriptorSpace` names the behaviour descriptors with their bounds and measurement bins.
:class:`MeasurementGrid` cuts the bounds into those bins (edges from ``np.linspace``, saved in the
archive's schema); a descriptor's cell is the C-order ravel of its per-dimension bin indices, and
descriptors outside the bounds are clipped into the edge cells.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_GRID_CELLS", "DescriptorSpace", "MeasurementGrid", "SpaceLike", "check_agent_id", "check_fitness",
           "check_int"]

#: Largest measurement grid (product of bins) an archive will allocate.
MAX_GRID_CELLS = 10_000_000


def check_fitness(fitness: Any) -> float:
    """``fitness`` as a finite float; ValueError naming the problem."""
    try:
        f = float(fitness)
    except (TypeError, ValueError):
        raise ValueError(f"fitness must be a number, got {fitness!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"fitness is not finite ({f})")
    return f


def check_agent_id(agent_id: Any) -> int:
    """``agent_id`` as an int >= 0; ValueError naming the problem."""
    if isinstance(agent_id, bool) or not isinstance(agent_id, (int, np.integer)):
        raise ValueError(f"agent_id must be an integer, got {agent_id!r}")
    if agent_id < 0:
        raise ValueError(f"agent_id must be >= 0, got {agent_id}")
    return int(agent_id)


def check_int(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (not a bool) >= ``minimum``."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and bool(value >= minimum)


@dataclass(frozen=True, eq=False)
class DescriptorSpace:
    """Names, bounds and measurement bins of the behaviour descriptors.

    ``lower`` and ``upper`` are float arrays of shape (d,); ``bins`` a tuple of d ints >= 1.
    Construction validates everything and raises ValueError naming the offending descriptor.
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    bins: tuple[int, ...]

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names:
            raise ValueError("descriptor space has no descriptors")
        for nm in names:
            if not isinstance(nm, str) or not nm:
                raise ValueError(f"descriptor name {nm!r} must be a non-empty string")
        if len(set(names)) != len(names):
            raise ValueError(f"descriptor names must be unique, got {list(names)}")
        d = len(names)
        try:
            lower = np.array(self.lower, dtype=np.float64).reshape(-1)
            upper = np.array(self.upper, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"descriptor bounds must be numbers: {exc}") from None
        bins_in = list(self.bins)
        for what, n in (("lower", lower.size), ("upper", upper.size), ("bins", len(bins_in))):
            if n != d:
                raise ValueError(f"descriptor space has {d} names {list(names)} but {n} {what} values")
        bins = []
        for i, nm in enumerate(names):
            lo, hi, b = lower[i], upper[i], bins_in[i]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"descriptor {nm!r}: bounds must be finite, got [{lo}, {hi}]")
            if not lo < hi:
                raise ValueError(f"descriptor {nm!r}: lower ({lo}) must be < upper ({hi})")
            if not check_int(b, 1):
                raise ValueError(f"descriptor {nm!r}: bins must be an integer >= 1, got {b!r}")
            bins.append(int(b))
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "bins", tuple(bins))

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def n_cells(self) -> int:
        """Cells of the measurement grid (product of bins)."""
        return math.prod(self.bins)

    @property
    def diameter(self) -> float:
        """Largest distance inside the bounds, ``norm(upper - lower)``."""
        return float(np.linalg.norm(self.upper - self.lower))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DescriptorSpace:
        """From ``{"names": [...], "lower": [...], "upper": [...], "bins": [...]}``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"descriptor space must be a dict, got {type(d).__name__}")
        missing = [key for key in ("names", "lower", "upper", "bins") if key not in d]
        if missing:
            raise ValueError(f"descriptor space is missing {missing}")
        extra = sorted(set(d) - {"names", "lower", "upper", "bins"})
        if extra:
            raise ValueError(f"descriptor space has unknown keys {extra}")
        return cls(names=tuple(d["names"]), lower=d["lower"], upper=d["upper"], bins=tuple(d["bins"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "lower": [float(x) for x in self.lower],
            "upper": [float(x) for x in self.upper],
            "bins": list(self.bins),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DescriptorSpace):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.names, tuple(self.lower.tolist()), tuple(self.upper.tolist()), self.bins))

    def check(self, descriptor: npt.ArrayLike) -> np.ndarray:
        """One descriptor as a float array of shape (d,); ValueError naming the problem."""
        try:
            x = np.asarray(descriptor, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"descriptors must be numbers: {exc}") from None
        if x.ndim != 1 or x.shape[0] != self.dim:
            raise ValueError(
                f"expected {self.dim} descriptors {list(self.names)}, got shape {tuple(x.shape)}"
            )
        if not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(f"descriptor {self.names[i]!r} is not finite ({x[i]})")
        return x

    def check_many(self, descriptors: npt.ArrayLike) -> np.ndarray:
        """Many descriptors as a float array of shape (n, d); ValueError naming the problem."""
        try:
            x = np.asarray(descriptors, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"descriptors must be numbers: {exc}") from None
        if x.ndim == 1 and x.shape[0] == self.dim:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"expected descriptors of shape (n, {self.dim}) for {list(self.names)}, got {tuple(x.shape)}"
            )
        bad = ~np.isfinite(x)
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(f"descriptor {self.names[c]!r} of row {r} is not finite ({x[r, c]})")
        return x


SpaceLike = DescriptorSpace | dict[str, Any]
"""A descriptor space, or its dict (:meth:`DescriptorSpace.to_dict`)."""


class MeasurementGrid:
    """The measurement grid: bin edges per dimension, cell = C-order ravel of bin indices.

    A value equal to an inner edge falls in the bin above it; values below the first or above the
    last edge fall in the edge bins.
    """

    def __init__(self, edges: Sequence[Sequence[float]]):
        self.edges = [np.asarray(e, dtype=np.float64) for e in edges]
        self._inner = [e[1:-1].tolist() for e in self.edges]
        self._inner_np = [e[1:-1] for e in self.edges]
        self.shape = tuple(len(e) - 1 for e in self.edges)
        self.n_cells = math.prod(self.shape)
        strides = []
        s = 1
        for b in reversed(self.shape):
            strides.append(s)
            s *= b
        self._strides = tuple(reversed(strides))

    @classmethod
    def from_space(cls, space: DescriptorSpace) -> MeasurementGrid:
        """``bins[i]`` equal bins over ``[lower[i], upper[i]]``; ValueError past MAX_GRID_CELLS."""
        if space.n_cells > MAX_GRID_CELLS:
            raise ValueError(
                f"measurement grid of {space.n_cells} cells (bins {list(space.bins)}) exceeds {MAX_GRID_CELLS}"
            )
        return cls([np.linspace(lo, hi, b + 1).tolist()
                    for lo, hi, b in zip(space.lower, space.upper, space.bins, strict=True)])

    def edge_lists(self) -> list[list[float]]:
        """The edges as JSON-able lists (the schema's ``edges``)."""
        return [e.tolist() for e in self.edges]

    def cell(self, x: np.ndarray) -> int:
        """The cell of one descriptor (shape (d,))."""
        c = 0
        for inner, stride, v in zip(self._inner, self._strides, x.tolist(), strict=True):
            c += bisect.bisect_right(inner, v) * stride
        return c

    def bins_of(self, X: np.ndarray) -> np.ndarray:
        """Per-dimension bin index of each descriptor, int64 shape (n, d)."""
        out = np.zeros((len(X), len(self.edges)), dtype=np.int64)
        for j, inner in enumerate(self._inner_np):
            out[:, j] = np.searchsorted(inner, X[:, j], side="right")
        return out

    def cells(self, X: np.ndarray) -> np.ndarray:
        """The cell of each descriptor (shape (n, d)), int64 shape (n,)."""
        c = np.zeros(len(X), dtype=np.int64)
        for j, (inner, stride) in enumerate(zip(self._inner_np, self._strides, strict=True)):
            c += np.searchsorted(inner, X[:, j], side="right").astype(np.int64) * stride
        return c
