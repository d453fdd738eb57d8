"""The tune operator's search: literals found and rewritten in place, and candidates that depend only on
their seeds and the results before them."""

from __future__ import annotations

import ast
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.mutation import check_params
from openended.mutation.tune import MAX_EVALUATIONS, TuneParams, TuneSearch, group_of, group_seed, literals, rewrite

SOURCE = '''import math

# a comment that must survive: é
SCALE = 2.5  # metres
def f(x):
    """Docstring 1.0 stays."""
    return -0.75 * x ** -1.5 + SCALE * math.pi + 3 + f"{4.0}"
'''


def _values(source: str) -> list[float]:
    return [lit.value for lit in literals(source)]


def test_floats_are_found_with_their_sign_and_rewritten_in_place():
    assert _values(SOURCE) == [2.5, -0.75, -1.5, 4.0]
    assert [lit.value for lit in literals(SOURCE, ints=True)] == [2.5, -0.75, -1.5, 3, 4.0]
    changed = rewrite(SOURCE, literals(SOURCE), [2.75, 0.5, -2.0, 4.0])
    assert "# a comment that must survive: é" in changed and "# metres" in changed  # formatting kept
    assert "SCALE = 2.75" in changed and "return 0.5 * x ** (-2.0)" in changed
    assert _values(changed) == [2.75, 0.5, -2.0, 4.0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=4, max_size=4))
def test_any_values_round_trip_through_the_source(values):
    changed = rewrite(SOURCE, literals(SOURCE), values)
    ast.parse(changed)
    assert _values(changed) == values
    # the program's shape is the parent's: only the constants differ
    strip = {"ctx", "lineno", "col_offset", "end_lineno", "end_col_offset", "value", "op", "operand"}

    def shape(src):
        return Counter(type(n).__name__ for n in ast.walk(ast.parse(src)) if not set(n._fields) <= strip)
    assert shape(changed) == shape(rewrite(SOURCE, literals(SOURCE), [1.0, 1.0, 1.0, 1.0]))
    # a child's child, given the same constants, is the same text: no brackets piled on brackets
    assert rewrite(changed, literals(changed), values) == changed


def test_a_group_is_found_again_from_any_members_seed():
    base = group_seed(0x7A3F_1234_5678_9ABC)
    for index in range(MAX_EVALUATIONS):
        assert group_of(1000 + index, base + index) == (base, 1000)


def _files(source: str = "a = 1.0\nb = 2.0\n") -> dict[str, bytes]:
    return {"agent.py": source.encode()}


def _score(files: dict[str, bytes]) -> float:
    scope: dict = {}
    exec(files["agent.py"].decode(), {}, scope)
    return -((scope["a"] - 3) ** 2 + (scope["b"] - 3) ** 2)


def _search(rounds: int, params: TuneParams, seeds_from: int = 0) -> tuple[list[bytes], float]:
    search = TuneSearch(_files(), "agent.py", _score(_files()), params)
    made = []
    for r in range(rounds):
        children = search.round([seeds_from + r * params.batch + i for i in range(params.batch)])
        made += [c["agent.py"] for c in children]
        search.tell([_score(c) for c in children])
    return made, search.best_fitness


def test_the_search_improves_a_constant_and_each_candidate_depends_only_on_what_came_before():
    params = TuneParams.of({"evaluations": 40, "batch": 4, "sigma": 0.3})
    made, best = _search(10, params)
    assert best > _score(_files()) + 1.0  # from -5: most of the way to (3, 3)
    again, _ = _search(10, params)
    assert again == made
    shorter, _ = _search(4, params)  # a group cut short (a budget's end) makes the same first children
    assert shorter == made[:16]
    other, _ = _search(10, params, seeds_from=1000)
    assert other != made


def test_a_forged_or_failed_result_never_becomes_the_incumbent():
    search = TuneSearch(_files(), "agent.py", -5.0, TuneParams.of({"batch": 2}))
    search.round([1, 2])
    search.tell([None, float("nan")])
    assert search.best_fitness == -5.0 and search.best == [1.0, 2.0]


def test_bad_parameters_and_sources_are_named():
    with pytest.raises(ValueError, match="evaluations must be an integer from 1 to 256"):
        check_params("tune", {"evaluations": 0})
    with pytest.raises(ValueError, match="unknown parameter"):
        check_params("tune", {"steps": 3})
    with pytest.raises(ValueError, match="tournament must be an integer >= 0"):
        check_params("tune", {"tournament": -1})
    with pytest.raises(ValueError, match="no float literals"):
        TuneSearch(_files("a = 1\n"), "agent.py", None, TuneParams())
    with pytest.raises(ValueError, match="has no agent.py"):
        TuneSearch({"other.py": b"a = 1.0"}, "agent.py", None, TuneParams())
