"""Cell archives: one elite per cell, replaced only by a strictly fitter child.

``grid``
    MAP-Elites. The descriptor space is cut into ``bins[i]`` equal bins per dimension (edges from
    ``np.linspace``, saved in the schema). Descriptors outside the bounds are clipped into the edge
    cells. A child enters an empty cell (``new_cell``) or replaces the elite when its fitness is
    strictly greater, by more than the archive's margin when one is set (:meth:`Archive.set_margin`:
    the task's ``[fitness] tolerance``) (``improved``); otherwise ``not_added``.
``cvt``
    CVT-MAP-Elites. ``cells`` centroids (default 1024) from k-means (Lloyd iterations, nearest
    centroid by ``scipy.spatial.cKDTree``) over a seeded uniform sample of the bounds; centroids are
    saved in the schema. Same replacement rule as ``grid``; statistics are measured on the centroids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from openended.qd.archive import AddResult, Archive
from openended.qd.space import DescriptorSpace, MeasurementGrid, SpaceLike, check_int

__all__ = ["CVTArchive", "CellArchive", "CentroidCells", "GridArchive", "cvt_centroids"]


class CellArchive(Archive):
    """Shared by grid and cvt: one elite per cell (the measurement cell), replaced only by strictly better fitness."""

    def _init_cells(self) -> None:
        self._slot_of_cell = np.full(self._measure.n_cells, -1, dtype=np.int64)
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._n_new = 0

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        cell = self._measure.cell(x)
        slot = int(self._slot_of_cell[cell])
        if slot < 0:
            slot = self._append(agent_id, fitness, x, novelty, cell, cell)
            self._slot_of_cell[cell] = slot
            self._n_new += 1
            return AddResult("new_cell", novelty, cell, None)
        if self.fitter(fitness, float(self._store.fitness[slot])):
            old = int(self._store.ids[slot])
            self._replace(slot, agent_id, fitness, x, novelty, cell)
            return AddResult("improved", novelty, cell, old)
        return AddResult("not_added", novelty, None, None)

    def _order(self) -> np.ndarray:
        cached = self._order_cache
        if cached is not None and cached[0] == self._n_new:
            return cached[1]
        occupied = np.flatnonzero(self._slot_of_cell >= 0)
        order = self._slot_of_cell[occupied]
        self._order_cache = (self._n_new, order)
        return order

    def _check_restored_cells(self, cells: np.ndarray) -> None:
        n_cells = self._measure.n_cells
        if cells[0] < 0 or cells[-1] >= n_cells:
            raise ValueError(f"elite cell out of range [0, {n_cells})")

    def _mcells_for_restore(self, cells: np.ndarray, X: np.ndarray) -> np.ndarray:
        return cells

    def _load_slots(self) -> None:
        self._slot_of_cell[:] = -1
        self._slot_of_cell[self._store.cell[: self._store.size]] = np.arange(self._store.size)
        self._n_new += 1


class GridArchive(CellArchive):
    """MAP-Elites grid archive (see module docstring). Cells: C-order ravel of per-dimension bins."""

    kind = "grid"

    def __init__(self, *, space: SpaceLike, fitness_offset: float, k: int = 15,
                 _edges: Sequence[Sequence[float]] | None = None, **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, **kind_params)
        self._grid = MeasurementGrid(_edges) if _edges is not None else MeasurementGrid.from_space(self.space)
        self._set_measure(self._grid)
        self._init_cells()

    def _kind_schema(self) -> dict[str, Any]:
        return {"edges": self._grid.edge_lists()}

    @classmethod
    def _from_schema(cls, schema: Mapping[str, Any]) -> GridArchive:
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   _edges=schema["edges"])


def cvt_centroids(space: DescriptorSpace, cells: int, samples: int, iterations: int, seed: int) -> np.ndarray:
    """k-means (Lloyd) centroids of a seeded uniform sample of the bounds; assignment by cKDTree.

    scipy.cluster.vq.kmeans2 assigns by brute force (O(samples * cells) per iteration); the cKDTree
    assignment is O(samples log cells), which matters at the default 1024 cells.
    """
    rng = np.random.default_rng(seed)
    d = space.dim
    X = rng.uniform(space.lower, space.upper, size=(samples, d))
    C = X[rng.choice(samples, size=cells, replace=False)].copy()
    for _ in range(iterations):
        _, lab = cKDTree(C).query(X)
        counts = np.bincount(lab, minlength=cells)
        nonempty = counts > 0
        for j in range(d):
            s = np.bincount(lab, weights=X[:, j], minlength=cells)
            C[nonempty, j] = s[nonempty] / counts[nonempty]
    return C


class CentroidCells:
    """Cells of the nearest centroid (the CVT measure): cell = index of the nearest centroid."""

    def __init__(self, centroids: np.ndarray):
        self.centroids = centroids
        self.n_cells = len(centroids)
        self._tree = cKDTree(centroids)

    def cell(self, x: np.ndarray) -> int:
        return int(self._tree.query(x)[1])

    def cells(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._tree.query(X)[1]).astype(np.int64)


class CVTArchive(CellArchive):
    """CVT-MAP-Elites archive.

    Params: ``cells`` (default 1024) centroids; ``samples`` uniform points for k-means (default
    ``min(50 * cells, 100_000)``, at least ``cells``); ``iterations`` Lloyd iterations (default 10);
    ``seed`` for the sample. Centroids are stored in the schema. Statistics use the centroid cells.
    """

    kind = "cvt"
    seeded = True

    def __init__(self, *, space: SpaceLike, fitness_offset: float, k: int = 15, cells: int = 1024,
                 samples: int | None = None, iterations: int = 10, seed: int = 0,
                 _centroids: Sequence[Sequence[float]] | None = None, **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, **kind_params)
        for name, v, lo in (("cells", cells, 1), ("iterations", iterations, 0)):
            if not check_int(v, lo):
                raise ValueError(f"cvt {name} must be an integer >= {lo}, got {v!r}")
        cells = int(cells)
        if samples is None:
            samples = max(cells, min(50 * cells, 100_000))
        if not check_int(samples, cells):
            raise ValueError(f"cvt samples must be an integer >= cells ({cells}), got {samples!r}")
        self._params = {"cells": cells, "samples": int(samples), "iterations": int(iterations), "seed": int(seed)}
        d = self.space.dim
        if _centroids is not None:
            C = np.asarray(_centroids, dtype=np.float64)
            if C.shape != (cells, d) or not np.isfinite(C).all():
                raise ValueError(f"cvt centroids must be finite with shape ({cells}, {d}), got {C.shape}")
        else:
            C = cvt_centroids(self.space, cells, int(samples), int(iterations), int(seed))
        self.centroids = C
        self.centroids.flags.writeable = False
        self._set_measure(CentroidCells(C))
        self._init_cells()

    def _kind_schema(self) -> dict[str, Any]:
        return {**self._params, "centroids": self.centroids.tolist()}

    @classmethod
    def _from_schema(cls, schema: Mapping[str, Any]) -> CVTArchive:
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   cells=schema["cells"], samples=schema["samples"], iterations=schema["iterations"],
                   seed=schema["seed"], _centroids=schema["centroids"])
