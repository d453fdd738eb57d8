"""QD statistics stay finite for any finite fitness: sums beyond the float range saturate."""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.qd.stats import QDStats, from_exact

MAX = sys.float_info.max


def test_two_elites_near_the_largest_double_saturate_the_qd_score():
    stats = QDStats(4, 0.0)
    stats.admit(0, 1.7e308)
    stats.admit(1, 1.7e308)
    assert stats.as_dict()["qd_score"] == MAX and stats.as_dict()["mean_fitness"] == 1.7e308
    low = QDStats(4, 1.7e308)
    low.admit(0, -1.7e308)
    low.admit(1, -1.7e308)
    assert low.qd_score == -MAX


def test_from_exact_saturates_both_ways():
    assert from_exact(1 << 3000) == MAX and from_exact(-(1 << 3000)) == -MAX
    assert from_exact(1 << 1074) == 1.0 and from_exact(3 << 1074, 2) == 1.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.floats(allow_nan=False, allow_infinity=False)), min_size=1,
                max_size=20),
       st.floats(allow_nan=False, allow_infinity=False))
def test_statistics_are_finite_for_any_finite_fitness(members, offset):
    stats = QDStats(8, offset)
    for cell, fitness in members:
        stats.admit(cell, fitness)
    loaded = QDStats(8, offset)
    loaded.load(np.array([c for c, _ in members]), np.array([f for _, f in members]))
    for s in (stats.as_dict(), loaded.as_dict()):
        assert all(np.isfinite(s[k]) for k in ("qd_score", "coverage", "max_fitness", "mean_fitness"))
    assert stats.as_dict() == loaded.as_dict()
