"""exact_sum (the vectorised exact sum a restore uses) equals the per-value exact sum for any finite doubles:
zeros of both signs, subnormals, the largest doubles, mixed signs and magnitudes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.qd.stats import QDStats, exact, exact_sum

finite = st.floats(allow_nan=False, allow_infinity=False)
tiny = st.floats(min_value=-1e-300, max_value=1e-300, allow_nan=False, allow_subnormal=True)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(finite | tiny, max_size=200))
def test_exact_sum_is_the_sum_of_exact(values):
    assert exact_sum(np.array(values, dtype=np.float64)) == sum(map(exact, values))


def test_extremes_and_many_values():
    extremes = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308]
    assert exact_sum(np.array(extremes * 3)) == sum(map(exact, extremes * 3))
    many = np.random.default_rng(0).normal(size=200_000) * 1e300  # mantissa sums well past 2**53 per exponent
    assert exact_sum(many) == sum(map(exact, many.tolist()))
    assert exact_sum(np.zeros(0)) == 0


def test_a_loaded_stats_equals_one_built_member_by_member():
    rng = np.random.default_rng(1)
    cells, fitness = rng.integers(0, 50, size=500), rng.normal(size=500) * 10.0 ** rng.integers(-5, 5, size=500)
    built = QDStats(50, -3.0)
    for c, f in zip(cells.tolist(), fitness.tolist(), strict=True):
        built.admit(c, f)
    loaded = QDStats(50, -3.0)
    loaded.load(cells, fitness)
    assert loaded.as_dict() == built.as_dict()
