"""The ``clade`` and ``latest`` selection strategies: clade statistics are the sums over each member's
subtree, rebuilt exactly from the store's order; Thompson sampling favours productive clades."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_selection import archive_of

from openended.clades import Clades
from openended.selection import LineageCounts, select_parents, selection_weights


@st.composite
def trees(draw):
    """A random lineage: each agent's parent is an earlier agent or none; some agents finished, in a
    random order, with a random status and fitness."""
    n = draw(st.integers(1, 60))
    parents = [None] + [draw(st.one_of(st.none(), st.integers(0, i - 1))) for i in range(1, n)]
    finished_ids = draw(st.permutations(range(n)))[: draw(st.integers(0, n))]
    outcomes = [(i, draw(st.sampled_from(["archived", "rejected", "failed"])),
                 draw(st.one_of(st.none(), st.floats(-2, 3, allow_nan=False)))) for i in finished_ids]
    return parents, outcomes


def _descendants(parents, agent_id):
    """The agent and everything below it (by walking each agent up to its root)."""
    out = set()
    for i in range(len(parents)):
        node = i
        while node is not None:
            if node == agent_id:
                out.add(i)
                break
            node = parents[node]
    return out


@settings(max_examples=60, deadline=None)
@given(trees(), st.sampled_from([None, 1.0, 2.0]))
def test_clade_statistics_are_sums_over_the_subtree_and_rebuild_exactly(tree, upper):
    parents, outcomes = tree
    live = Clades(0.0, upper)
    for i, p in enumerate(parents):
        live.note_proposed(i, p)
    for agent_id, status, fitness in outcomes:
        live.note_finished(agent_id, status, fitness)
    ids = np.arange(len(parents))
    for agent_id in ids:
        below = _descendants(parents, int(agent_id))
        mine = [(s, f) for i, s, f in outcomes if i in below]
        assert live.trials([agent_id])[0] == len(mine)
        expected = sum(live.success(s, f) for s, f in mine)
        assert live.successes([agent_id])[0] == pytest.approx(expected)
        assert 0.0 <= live.successes([agent_id])[0] <= live.trials([agent_id])[0]
    rebuilt = Clades.rebuild(enumerate(parents), outcomes, 0.0, upper)
    np.testing.assert_array_equal(rebuilt.trials(ids), live.trials(ids))  # bit for bit: the same order
    np.testing.assert_array_equal(rebuilt.successes(ids), live.successes(ids))


def test_success_is_the_rescaled_fitness_or_entering_the_archive():
    scaled = Clades(0.0, 1.0)
    assert scaled.success("rejected", 0.25) == 0.25
    assert scaled.success("archived", 7.0) == 1.0  # clipped
    assert scaled.success("failed", None) == 0.0
    unbounded = Clades(0.0, None)
    assert unbounded.success("archived", -5.0) == 1.0
    assert unbounded.success("rejected", 99.0) == 0.0
    with pytest.raises(ValueError, match="upper"):
        Clades(1.0, 1.0)


def test_clade_selection_prefers_the_productive_subtree_over_the_best_own_score():
    # agent 0: own fitness 0.1 but its children 2..11 solved 90% each; agent 1: fitness 0.9, ten children
    # that solved nothing. Only 0 and 1 are archive members.
    archive = archive_of(np.array([0.1, 0.9]), ids=np.array([0, 1]))
    clades = Clades(0.0, 1.0)
    clades.note_proposed(0, None)
    clades.note_proposed(1, None)
    for child in range(2, 22):
        clades.note_proposed(child, 0 if child < 12 else 1)
    clades.note_finished(0, "archived", 0.1)
    clades.note_finished(1, "archived", 0.9)
    for child in range(2, 22):
        clades.note_finished(child, "rejected", 0.9 if child < 12 else 0.0)
    counts = LineageCounts(clades=clades)
    picks = select_parents("clade", archive, counts, np.random.default_rng(0), n=2000)
    assert (picks == 0).mean() > 0.95
    # tournament on own fitness picks agent 1 instead
    assert (select_parents("tournament", archive, counts, np.random.default_rng(0), n=2000) == 1).mean() > 0.6
    weights = selection_weights("clade", archive, counts)
    assert weights[0] > weights[1]
    with pytest.raises(ValueError, match="clade prior"):
        select_parents("clade", archive, counts, np.random.default_rng(0), prior=0)


def test_latest_always_extends_the_newest_member():
    archive = archive_of(np.array([5.0, 1.0, 3.0]), ids=np.array([4, 17, 9]))
    picks = select_parents("latest", archive, LineageCounts(), np.random.default_rng(0), n=50)
    assert picks.tolist() == [17] * 50
    assert selection_weights("latest", archive, LineageCounts()).tolist() == [0.0, 1.0, 0.0]
