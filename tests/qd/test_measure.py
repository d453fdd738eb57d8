"""Measurements from a stored schema alone equal what the archive computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openended.qd import (
    ARCHIVE_KINDS,
    DescriptorSpace,
    make_archive,
    measurement_bins,
    measurement_cells,
    measurement_edges,
    measurement_stats,
    qd_score,
    qd_stats,
    restore_archive,
)

SPACE = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [0.0, -1.0], "upper": [10.0, 4.0], "bins": [5, 4]})
PARAMS = {"grid": {}, "cvt": {"cells": 16, "samples": 800}, "novelty": {"threshold": 0.5}, "all": {}}
_EMPTY = {kind: make_archive(kind, space=SPACE, fitness_offset=-10.3, seed=3, **PARAMS[kind]) for kind in ARCHIVE_KINDS}
HSET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coord = st.floats(-2.0, 12.0, allow_nan=False)
child = st.tuples(st.floats(-9.0, 9.0, allow_nan=False), coord, coord)
children = st.lists(child, min_size=1, max_size=60)


def fresh(kind):
    a = _EMPTY[kind]
    return restore_archive(schema=a.schema(), state=a.state(), elites=[])


def stored_schema(a):
    return json.loads(json.dumps(a.schema()))  # as a database gives it back


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
@HSET
@given(stream=children)
def test_qd_stats_of_members_and_replay_equal_archive_stats(kind, stream):
    a = fresh(kind)
    schema = stored_schema(a)
    replay = measurement_stats(schema)
    for i, (f, x, y) in enumerate(stream):
        r = a.add(i, f, [x, y])
        assert measurement_cells(schema, [[x, y]])[0] == a.measurement_cell([x, y])
        if r.status != "not_added":
            replay.measure(int(measurement_cells(schema, [[x, y]])[0]), f)
        s = a.stats()
        assert (replay.qd_score, replay.coverage, replay.occupied, replay.n_cells) == (
            s["qd_score"], s["coverage"], s["occupied"], s["cells"])
    m = a.members()
    got = qd_stats(schema, m["fitness"], m["descriptors"])
    s = a.stats()
    assert got == {"qd_score": s["qd_score"], "coverage": s["coverage"], "occupied": s["occupied"],
                   "cells": s["cells"]}
    assert qd_score(schema, m["fitness"], m["descriptors"]) == s["qd_score"]
    if kind in ("grid", "cvt"):
        np.testing.assert_array_equal(measurement_cells(schema, m["descriptors"]), m["cell"])


@HSET
@given(X=st.lists(st.tuples(coord, coord), max_size=40))
def test_bins_and_cells_match_clipped_floor(X):
    schema = stored_schema(fresh("grid"))
    X = np.asarray(X, dtype=np.float64).reshape(-1, 2)
    edges = measurement_edges(schema)
    assert [e.tolist() for e in edges] == schema["edges"]
    bins = measurement_bins(schema, X)
    assert bins.shape == (len(X), 2) and bins.dtype == np.int64
    # away from the edges themselves, the bin is the clipped floor of the scaled value
    scaled = (X - SPACE.lower) / (SPACE.upper - SPACE.lower) * SPACE.bins
    on_edge = np.isclose(scaled, np.round(scaled)).any(axis=1)
    expected = np.clip(np.floor(scaled), 0, np.array(SPACE.bins) - 1).astype(np.int64)
    np.testing.assert_array_equal(bins[~on_edge], expected[~on_edge])
    np.testing.assert_array_equal(measurement_cells(schema, X), bins[:, 0] * 4 + bins[:, 1])


def test_edges_of_every_kind_and_schema_errors():
    for kind in ARCHIVE_KINDS:
        schema = stored_schema(fresh(kind))
        edges = measurement_edges(schema)
        assert [e.tolist() for e in edges] == [np.linspace(0, 10, 6).tolist(), np.linspace(-1, 4, 5).tolist()]
        assert measurement_stats(schema).n_cells == (16 if kind == "cvt" else 20)
        assert measurement_cells(schema, np.zeros((0, 2))).shape == (0,)
        assert qd_score(schema, [], []) == 0.0
    with pytest.raises(ValueError, match="no descriptor space"):
        measurement_edges({"kind": "grid"})
    with pytest.raises(ValueError, match="no centroids"):
        measurement_cells({"kind": "cvt", "space": SPACE.to_dict()}, [[1.0, 1.0]])
    with pytest.raises(ValueError, match="expected descriptors of shape"):
        measurement_cells(stored_schema(fresh("grid")), [[1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="2 fitness values but 1 descriptor rows"):
        qd_stats(stored_schema(fresh("all")), [1.0, 2.0], [[1.0, 1.0]])


def test_qd_score_is_exact_and_order_free():
    schema = stored_schema(fresh("all"))
    rng = np.random.default_rng(0)
    F = rng.normal(size=500) * 1e6
    X = rng.uniform(0, 10, size=(500, 2))
    perm = rng.permutation(500)
    assert qd_score(schema, F, X) == qd_score(schema, F[perm], X[perm])
