"""Archive.restore from aligned columns (what ArchiveDB.elite_arrays gives) equals the restore from dicts:
same members, stats and state, and the same future adds; bad columns are refused as bad dicts are."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.qd import ARCHIVE_KINDS, DescriptorSpace, make_archive, restore_archive

SPACE = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [0.0, -1.0], "upper": [10.0, 4.0], "bins": [5, 4]})
PARAMS = {"grid": {}, "cvt": {"cells": 16, "samples": 800}, "novelty": {"threshold": 0.5}, "all": {}}
_EMPTY = {kind: make_archive(kind, space=SPACE, fitness_offset=-10.0, seed=3, **PARAMS[kind]) for kind in ARCHIVE_KINDS}


def _filled(kind: str, seed: int, n: int):
    a = _EMPTY[kind]
    a = restore_archive(schema=a.schema(), state=a.state(), elites=[])
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 11, size=(n + 200, 2))
    X[::7] = X[::7].round(0)  # exact duplicates and ties
    F = rng.normal(size=n + 200).round(1)
    a.add_batch(range(n), F[:n], X[:n])
    return a, F, X


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 500))
def test_columns_restore_the_archive_the_dicts_restore(kind, seed, n):
    a, F, X = _filled(kind, seed, n)
    members = a.members()
    order = np.random.default_rng(seed).permutation(a.size)  # the store may give them in any order
    columns = {"cell": members["cell"][order], "agent_id": members["agent_id"][order],
               "fitness": members["fitness"][order], "novelty": members["novelty"][order],
               "descriptors": members["descriptors"][order]}
    b = restore_archive(schema=a.schema(), state=a.state(), elites=columns)
    c = restore_archive(schema=a.schema(), state=a.state(), elites=a.elites())
    assert b.stats() == c.stats() == a.stats() and b.state() == c.state()
    for key, value in c.members().items():
        np.testing.assert_array_equal(b.members()[key], value)
    assert b.add_batch(range(n, n + 200), F[n:], X[n:]) == c.add_batch(range(n, n + 200), F[n:], X[n:])
    assert b.stats() == c.stats()


def _columns(**change):
    columns = {"cell": np.array([0, 1]), "agent_id": np.array([5, 6]), "fitness": np.array([0.5, 1.0]),
               "novelty": np.array([0.0, 0.1]), "descriptors": np.array([[1.0, 0.0], [9.0, 3.0]])}
    columns.update(change)
    return columns


@pytest.mark.parametrize("change, match", [
    ({"agent_id": np.array([5, -1])}, "agent_id must be >= 0"),
    ({"agent_id": np.array([5.0, 6.0])}, "agent_id must be integers"),
    ({"cell": np.array([True, False])}, "cell must be integers"),
    ({"fitness": np.array([0.5, np.inf])}, "fitness is not finite"),
    ({"fitness": np.array([0.5])}, "different lengths"),
    ({"descriptors": np.array([[1.0, 0.0]])}, "1 descriptors for 2 elites"),
    ({"descriptors": np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])}, "shape"),
    ({"descriptors": np.array([[1.0, np.nan], [1.0, 0.0]])}, "not finite"),
    ({"cell": np.array([1, 1])}, "same cell more than once"),
])
def test_bad_columns_are_refused(change, match):
    a = _EMPTY["grid"]
    with pytest.raises(ValueError, match=match):
        restore_archive(schema=a.schema(), state=a.state(), elites=_columns(**change))
    with pytest.raises(ValueError, match="missing 'novelty'"):
        restore_archive(schema=a.schema(), state=a.state(),
                        elites={k: v for k, v in _columns().items() if k != "novelty"})


def test_empty_columns_restore_an_empty_archive():
    a = _EMPTY["all"]
    empty = {"cell": np.zeros(0, np.int64), "agent_id": np.zeros(0, np.int64), "fitness": np.zeros(0),
             "novelty": np.zeros(0), "descriptors": np.zeros((0, 0))}
    assert restore_archive(schema=a.schema(), state=a.state(), elites=empty).size == 0
