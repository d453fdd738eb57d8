"""Measurements of a stored run, from its archive schema alone (the dict ``Archive.schema()`` writes).

These give what the archive computes, for code that has the schema and the members but no
archive (inspection, reports): the measurement edges, the measurement cell of descriptors, and
coverage and QD score of a set of (fitness, descriptors) members, with the archive's exact sums.

The measurement cells are the cells of the space's measurement grid (the schema's ``edges``) for
``grid``, ``novelty`` and ``all``, and the nearest centroid (the schema's ``centroids``) for ``cvt``.
ValueError names a schema without what is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from openended.qd.archive import CellMeasure
from openended.qd.cells import CentroidCells
from openended.qd.space import DescriptorSpace, MeasurementGrid, check_fitness
from openended.qd.stats import QDStats

__all__ = ["measurement_bins", "measurement_cells", "measurement_edges", "measurement_stats", "qd_score",
           "qd_stats", "schema_space"]

Schema = Mapping[str, Any]


def schema_space(schema: Schema) -> DescriptorSpace:
    """The descriptor space of ``schema`` (its ``space``)."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("space"), Mapping):
        raise ValueError("the archive schema has no descriptor space (names, lower, upper, bins)")
    return DescriptorSpace.from_dict(schema["space"])


def _grid(schema: Schema) -> MeasurementGrid:
    if "edges" in schema:
        return MeasurementGrid(schema["edges"])
    return MeasurementGrid.from_space(schema_space(schema))


def _measure(schema: Schema) -> CellMeasure:
    if schema.get("kind") == "cvt":
        if "centroids" not in schema:
            raise ValueError("the cvt archive schema has no centroids")
        return CentroidCells(np.asarray(schema["centroids"], dtype=np.float64))
    return _grid(schema)


def _descriptors(schema: Schema, descriptors: npt.ArrayLike) -> np.ndarray:
    space = schema_space(schema)
    X = np.asarray(descriptors, dtype=np.float64)
    if X.size == 0:
        return np.zeros((0, space.dim))
    return space.check_many(X)


def measurement_edges(schema: Schema) -> list[np.ndarray]:
    """Bin edges per descriptor, each (bins[i] + 1,): the schema's ``edges`` (grid, novelty, all), else
    (``cvt``, whose cells are centroids) ``bins[i]`` equal bins over the space's bounds."""
    return _grid(schema).edges


def measurement_bins(schema: Schema, descriptors: npt.ArrayLike) -> np.ndarray:
    """Per-descriptor bin index on :func:`measurement_edges`, int64 (n, d); out-of-bounds values are
    clipped into the edge bins, a value on an inner edge falls in the bin above it."""
    return _grid(schema).bins_of(_descriptors(schema, descriptors))


def measurement_cells(schema: Schema, descriptors: npt.ArrayLike) -> np.ndarray:
    """The measurement cell of each descriptor (shape (n, d)), int64 (n,): the C-order ravel of
    :func:`measurement_bins` (grid, novelty, all) or the nearest centroid (cvt)."""
    return _measure(schema).cells(_descriptors(schema, descriptors))


def measurement_stats(schema: Schema) -> QDStats:
    """An empty :class:`QDStats` on the schema's measurement cells and fitness offset: call
    ``measure(cell, fitness)`` per member (e.g. in the order a run archived them) and read
    ``qd_score``, ``coverage``, ``occupied``, ``n_cells`` after each."""
    return QDStats(_measure(schema).n_cells, check_fitness(schema.get("fitness_offset", 0.0)))


def qd_stats(schema: Schema, fitness: npt.ArrayLike, descriptors: npt.ArrayLike) -> dict[str, float | int]:
    """``{"qd_score", "coverage", "occupied", "cells"}`` of members with these ``fitness`` (n,) and
    ``descriptors`` (n, d), exactly as an archive holding them reports them in ``stats()``."""
    stats = measurement_stats(schema)
    cells = measurement_cells(schema, descriptors)
    fit = np.asarray(fitness, dtype=np.float64).reshape(-1)
    if len(fit) != len(cells):
        raise ValueError(f"got {len(fit)} fitness values but {len(cells)} descriptor rows")
    for c, f in zip(cells.tolist(), fit.tolist(), strict=True):
        stats.measure(c, check_fitness(f))
    return {"qd_score": stats.qd_score, "coverage": stats.coverage, "occupied": stats.occupied,
            "cells": stats.n_cells}


def qd_score(schema: Schema, fitness: npt.ArrayLike, descriptors: npt.ArrayLike) -> float:
    """QD score of members with these ``fitness`` (n,) and ``descriptors`` (n, d): sum over occupied
    measurement cells of (best fitness - fitness_offset), exactly as the archive computes it."""
    return float(qd_stats(schema, fitness, descriptors)["qd_score"])
