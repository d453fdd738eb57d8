"""Exact quality-diversity statistics, kept incrementally.

Coverage = occupied measurement cells / cells; QD score = sum over occupied cells of (best fitness
in the cell - fitness_offset); mean fitness over the members. Sums are kept as exact integers in
units of 2**-1074 (every finite double is an integer multiple of it), so the results are correctly
rounded and do not depend on the order members arrived in: an archive restored from its elites
gives bit-identical statistics. A result beyond the float range (a QD score over many cells near
the largest double) saturates at ``±sys.float_info.max``: the statistics never overflow.
"""

from __future__ import annotations

import sys
from typing import TypedDict

import numpy as np

__all__ = ["ArchiveStats", "QDStats", "exact", "exact_sum", "from_exact"]

_EXACT_SHIFT = 1074  # every finite double is an integer multiple of 2**-1074


def exact(x: float) -> int:
    """``x`` as an exact integer in units of 2**-1074 (for order-independent sums)."""
    num, den = float(x).as_integer_ratio()
    return num << (_EXACT_SHIFT - (den.bit_length() - 1))


def exact_sum(values: np.ndarray) -> int:
    """``sum(map(exact, values))`` for a float array, in numpy: each double split into its 53-bit integer
    mantissa and its exponent, the mantissas summed exactly per exponent in int64 (in halves of 27 and 26
    bits: no overflow below 2**24 values), and only the few distinct exponents summed as Python integers.
    An archive restored with millions of members spent most of its time in the per-value :func:`exact`."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return 0
    f, e = np.frexp(x)  # x = f * 2**e with 0.5 <= |f| < 1 (subnormals too); f = 0 for zeros
    mantissa = (f * 2.0**53).astype(np.int64)  # exact: |f| * 2**53 is an integer below 2**53
    shift = e.astype(np.int64) + (_EXACT_SHIFT - 53)
    low = shift < 0  # a subnormal's mantissa ends in at least that many zero bits: the shift is exact
    if low.any():
        mantissa[low] >>= -shift[low]
        shift[low] = 0
    order = np.argsort(shift, kind="stable")
    shift, mantissa = shift[order], mantissa[order]
    starts = np.flatnonzero(np.r_[True, shift[1:] != shift[:-1]])
    high = np.add.reduceat(mantissa >> 26, starts)  # two's complement: mantissa = high * 2**26 + low part
    rest = np.add.reduceat(mantissa & ((1 << 26) - 1), starts)
    return sum(((int(h) << 26) + int(r)) << int(k) for h, r, k in zip(high, rest, shift[starts], strict=True))


def from_exact(total: int, divisor: int = 1) -> float:
    """Correctly rounded ``total * 2**-1074 / divisor``; beyond the float range it saturates at
    ``±sys.float_info.max`` (a sum of finite doubles can exceed it: two elites near 1.7e308)."""
    try:
        return total / (divisor << _EXACT_SHIFT)
    except OverflowError:
        return sys.float_info.max if total > 0 else -sys.float_info.max


class ArchiveStats(TypedDict):
    """What ``Archive.stats()`` returns (a plain dict)."""

    qd_score: float
    coverage: float
    max_fitness: float | None
    mean_fitness: float | None
    size: int
    cells: int
    occupied: int
    evaluations: int


class QDStats:
    """The statistics of an archive over ``n_cells`` measurement cells, updated per change in O(1).

    :meth:`measure` alone is the per-cell best (coverage and QD score), usable to replay a run;
    :meth:`admit` and :meth:`replace` also keep the member count, fitness sum and maximum.
    """

    def __init__(self, n_cells: int, fitness_offset: float):
        self.n_cells = int(n_cells)
        self.fitness_offset = float(fitness_offset)
        self._offset_exact = exact(self.fitness_offset)
        self._best = np.full(self.n_cells, -np.inf)  # best fitness per measurement cell
        self._occupied = 0
        self._best_sum = 0  # exact, sum of best fitness over occupied cells
        self._members = 0
        self._fit_sum = 0  # exact, sum of member fitness
        self._max_fit: float | None = None
        self.evaluations = 0

    # ------------------------------------------------------------------ updates
    def measure(self, cell: int, fitness: float) -> None:
        """A member of ``fitness`` now lies in measurement ``cell``: raise the cell's best."""
        best = self._best[cell]
        if best == -np.inf:
            self._occupied += 1
            self._best_sum += exact(fitness)
            self._best[cell] = fitness
        elif fitness > best:
            self._best_sum += exact(fitness) - exact(float(best))
            self._best[cell] = fitness

    def admit(self, cell: int, fitness: float) -> None:
        """A new member of ``fitness`` in measurement ``cell``."""
        self._members += 1
        self._fit_sum += exact(fitness)
        self._note_max(fitness)
        self.measure(cell, fitness)

    def replace(self, cell: int, old_fitness: float, fitness: float) -> None:
        """A member of ``old_fitness`` gave its place to one of ``fitness`` in measurement ``cell``."""
        self._fit_sum += exact(fitness) - exact(old_fitness)
        self._note_max(fitness)
        self.measure(cell, fitness)

    def load(self, cells: np.ndarray, fitness: np.ndarray) -> None:
        """Replace the members by ``fitness`` (n,) lying in measurement ``cells`` (n,) (n >= 1)."""
        self._members = len(fitness)
        self._fit_sum = exact_sum(fitness)
        self._max_fit = float(fitness.max())
        best = np.full(self.n_cells, -np.inf)
        np.maximum.at(best, cells, fitness)
        self._best = best
        occupied = best[np.isfinite(best)]
        self._occupied = len(occupied)
        self._best_sum = exact_sum(occupied)

    def _note_max(self, fitness: float) -> None:
        if self._max_fit is None or fitness > self._max_fit:
            self._max_fit = fitness

    # ------------------------------------------------------------------ results
    @property
    def occupied(self) -> int:
        return self._occupied

    @property
    def coverage(self) -> float:
        return self._occupied / self.n_cells

    @property
    def qd_score(self) -> float:
        return from_exact(self._best_sum - self._occupied * self._offset_exact)

    def as_dict(self) -> ArchiveStats:
        """qd_score, coverage, max_fitness, mean_fitness (None when empty), size, cells, occupied, evaluations."""
        n = self._members
        return {
            "qd_score": self.qd_score,
            "coverage": self.coverage,
            "max_fitness": self._max_fit,
            "mean_fitness": from_exact(self._fit_sum, n) if n else None,
            "size": n,
            "cells": self.n_cells,
            "occupied": self._occupied,
            "evaluations": self.evaluations,
        }
