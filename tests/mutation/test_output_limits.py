"""LLM operators' output limits: sized to the parent, per operator and per model, the embedded model included;
a bad key is an error naming it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openended.config import ConfigError, load_config
from openended.mutation.output_limits import DEFAULTS, Limit, max_output_tokens, resolve
from openended.names import LLM_OPERATORS, LOCAL_MODEL

MODEL = {"name": "m", "base_url": "http://127.0.0.1:9/v1", "model": "x"}


def test_the_limit_grows_with_the_parent_between_floor_and_cap():
    config = load_config(None, {})
    tiny, mid, huge = "x" * 40, "x" * 4000, "x" * 400_000  # 10, 1,000 and 100,000 estimated tokens
    for op in LLM_OPERATORS:
        default = DEFAULTS[op]
        assert max_output_tokens(config, "m", op, tiny) == default.floor
        assert max_output_tokens(config, "m", op, mid) == round(default.factor * 1000)
        assert max_output_tokens(config, "m", op, huge) == default.cap
    # a crossover is sized to the larger of its two parents
    crossover = max_output_tokens(config, "m", "llm_crossover", tiny, mid)
    assert crossover == max_output_tokens(config, "m", "llm_rewrite", mid)


def test_a_model_s_own_table_overrides_the_campaign_s_field_by_field():
    config = load_config(None, {
        "llm.max_output": {"llm_rewrite": {"factor": 3.0, "cap": 1000}, "llm_diff": {"floor": 100}},
        "llm.models": [{**MODEL, "max_output": {"llm_rewrite": {"cap": 500}}}, {**MODEL, "name": "other"}],
        "llm.local_max_output": {"llm_diff": {"factor": 0.5, "floor": 64, "cap": 128}},
    })
    assert resolve(config, "m", "llm_rewrite") == Limit(factor=3.0, floor=DEFAULTS["llm_rewrite"].floor, cap=500)
    assert resolve(config, "other", "llm_rewrite") == Limit(3.0, DEFAULTS["llm_rewrite"].floor, 1000)
    assert resolve(config, "m", "llm_diff") == Limit(DEFAULTS["llm_diff"].factor, 100, DEFAULTS["llm_diff"].cap)
    assert resolve(config, LOCAL_MODEL, "llm_diff") == Limit(0.5, 64, 128)
    assert max_output_tokens(config, LOCAL_MODEL, "llm_diff", "y" * 4000) == 128
    assert max_output_tokens(config, "m", "llm_rewrite", "y" * 400) == 300  # 100 tokens x 3


@pytest.mark.parametrize("overrides, key", [
    ({"llm.max_output": {"llm_rewrit": {"cap": 10}}}, "llm.max_output.llm_rewrit"),
    ({"llm.local_max_tokens": 0}, "llm.local_max_tokens"),
    ({"llm.max_output": {"llm_diff": {"ceiling": 10}}}, "llm.max_output.llm_diff.ceiling"),
    ({"llm.local_max_output": {"llm_diff": {"factor": 0}}}, "llm.local_max_output.llm_diff.factor"),
    ({"llm.models": [{**MODEL, "max_output": {"llm_diff": {"cap": "big"}}}]}, "llm.models.0.max_output.llm_diff.cap"),
    ({"llm.max_output": {"llm_diff": {"floor": 5000}}}, "llm.max_output.llm_diff"),  # over the default cap
    ({"llm.models": [{**MODEL, "max_output": {"llm_rewrite": {"floor": 300, "cap": 200}}}]},
     r"llm.models\[0\].max_output.llm_rewrite"),
])
def test_a_bad_output_limit_is_an_error_naming_its_key(overrides, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_config(None, overrides)


@given(factor=st.floats(0.01, 100), floor=st.integers(1, 10_000), extra=st.integers(0, 10_000),
       a=st.integers(0, 10**6), b=st.integers(0, 10**6))
def test_the_limit_is_monotone_in_the_parent_and_stays_within_floor_and_cap(factor, floor, extra, a, b):
    limit = Limit(factor, floor, floor + extra)
    small, large = sorted((a, b))
    assert floor <= limit.tokens(small) <= limit.tokens(large) <= floor + extra
