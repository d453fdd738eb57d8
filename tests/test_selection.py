"""Parent selection: statistical checks with fixed seeds, validity, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from openended.qd import DescriptorSpace, make_archive, restore_archive
from openended.selection import SELECTION_STRATEGIES, LineageCounts, _weighted_choice, select_parents, selection_weights

SPACE = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [0.0, 0.0], "upper": [1.0, 1.0], "bins": [4, 4]})
DRAWS = 20_000
P_MIN = 1e-4  # chi-square p-value floor with fixed seeds


def archive_of(fitness, novelty=None, ids=None):
    """An 'all' archive whose members have the given fitness / novelty / agent ids."""
    n = len(fitness)
    novelty = np.ones(n) if novelty is None else novelty
    ids = np.arange(n) if ids is None else ids
    rng = np.random.default_rng(0)
    empty = make_archive("all", space=SPACE, fitness_offset=-100.0, seed=0)
    elites = [{"cell": i, "agent_id": int(ids[i]), "fitness": float(fitness[i]),
               "descriptors": rng.uniform(0, 1, 2).tolist(), "novelty": float(novelty[i])} for i in range(n)]
    return restore_archive(schema=empty.schema(), state=empty.state(), elites=elites)


def pick_counts(strategy, archive, counts, seed=0, n=DRAWS, **params):
    picks = select_parents(strategy, archive, counts, np.random.default_rng(seed), n=n, **params)
    ids = archive.members()["agent_id"]
    assert np.isin(picks, ids).all()
    order = {int(a): i for i, a in enumerate(ids)}
    return np.bincount([order[int(p)] for p in picks], minlength=len(ids))


def chi2_ok(observed, probs):
    expected = probs / probs.sum() * observed.sum()
    return stats.chisquare(observed, expected).pvalue > P_MIN


def test_uniform_is_uniform():
    a = archive_of(np.linspace(-5, 5, 20))
    obs = pick_counts("uniform", a, LineageCounts())
    assert chi2_ok(obs, np.ones(20))


def test_fitness_proportional_with_negative_fitness():
    f = np.array([-10.0, -8.0, -5.0, -1.0, 0.0, 3.0])
    a = archive_of(f)
    obs = pick_counts("fitness", a, LineageCounts())
    w = f - f.min() + 1e-6 * (f.max() - f.min())
    assert chi2_ok(obs, w)
    assert obs[-1] > obs[-2] > obs[2] > obs[0]
    # all equal -> uniform
    obs = pick_counts("fitness", archive_of(np.full(8, -3.0)), LineageCounts())
    assert chi2_ok(obs, np.ones(8))


def test_tournament_prefers_better_with_the_rank_law():
    n, t = 10, 3
    f = np.random.default_rng(1).permutation(n).astype(float)
    a = archive_of(f)
    obs = pick_counts("tournament", a, LineageCounts(), size=t)
    r = stats.rankdata(f)  # 1 = worst; winner is rank r iff max of t uniform draws is r
    probs = (r / n) ** t - ((r - 1) / n) ** t
    assert chi2_ok(obs, probs)
    assert obs[np.argmax(f)] > obs[np.argmin(f)]
    obs1 = pick_counts("tournament", a, LineageCounts(), size=1)
    assert chi2_ok(obs1, np.ones(n))


def test_tournament_among_the_recent_members_follows_the_rank_law_within_them():
    n, t, recent = 30, 4, 10
    f = np.random.default_rng(2).permutation(n).astype(float)  # the best are spread over old and new members
    a = archive_of(f)
    obs = pick_counts("tournament", a, LineageCounts(), size=t, recent=recent)
    assert obs[:n - recent].sum() == 0  # no entrant older than the window
    r = stats.rankdata(f[n - recent:])
    probs = (r / recent) ** t - ((r - 1) / recent) ** t
    assert chi2_ok(obs[n - recent:], probs)
    # recent = 0 (the default) is the whole archive, draw for draw the same as before the parameter
    everyone = select_parents("tournament", a, LineageCounts(), np.random.default_rng(5), n=50, size=t, recent=0)
    assert (everyone == select_parents("tournament", a, LineageCounts(), np.random.default_rng(5), n=50,
                                       size=t)).all()
    assert not np.isin(everyone, np.arange(n - recent, n)).all()
    with pytest.raises(ValueError, match="tournament recent must be an integer >= 0"):
        select_parents("tournament", a, LineageCounts(), np.random.default_rng(0), recent=-1)


def test_score_child_matches_formula_and_penalises_many_children():
    f = np.array([0.0, 2.0, 5.0, 8.0, 10.0, 10.0])
    children = {4: 9, 5: 0, 3: 1}
    counts = LineageCounts.from_counts(children, {})
    a = archive_of(f)
    obs = pick_counts("score_child", a, counts)
    fn = (f - f.min()) / (f.max() - f.min())
    c = np.array([children.get(i, 0) for i in range(len(f))])
    w = 1 / (1 + np.exp(-10 * (fn - 0.5))) / (1 + c)
    np.testing.assert_allclose(selection_weights("score_child", a, counts), w)
    assert chi2_ok(obs, w)
    assert obs[5] > 5 * obs[4]  # same fitness, 9 children vs none


def test_novelty_proportional_prefers_novel():
    nov = np.array([0.0, 0.1, 1.0, 2.0, 4.0])
    a = archive_of(np.zeros(5), novelty=nov)
    obs = pick_counts("novelty", a, LineageCounts())
    assert chi2_ok(obs[1:], nov[1:] ** 3)  # default power 3; the zero-novelty member only has the floor
    assert obs[0] <= 2
    assert obs[4] > obs[3] > obs[2] > obs[1]
    for power in (1, 0.5, 2.0):
        obs = pick_counts("novelty", a, LineageCounts(), power=power)
        assert chi2_ok(obs[1:], nov[1:] ** power)
    np.testing.assert_allclose(selection_weights("novelty", a, LineageCounts(), power=3.0)[1:], nov[1:] ** 3)
    for bad in (0, -1.0, float("inf"), float("nan"), True, "2"):
        with pytest.raises(ValueError, match="novelty power"):
            select_parents("novelty", a, LineageCounts(), np.random.default_rng(0), power=bad)


def test_curiosity_favours_rarely_chosen_and_productive():
    ids = np.array([3, 7, 11, 20, 21])
    counts = LineageCounts()
    for _ in range(15):
        counts.note_child(7)  # chosen often, never productive
    for _ in range(3):
        counts.note_child(11)
        counts.note_discovery(11)  # productive
    a = archive_of(np.zeros(5), ids=ids)
    obs = pick_counts("curiosity", a, counts)
    ch = counts.children(ids)
    di = counts.discoveries(ids)
    assert ch.tolist() == [0, 15, 3, 0, 0] and di.tolist() == [0, 0, 3, 0, 0]
    w = (1 + di) / np.sqrt(1 + ch)
    assert chi2_ok(obs, w)
    assert obs[2] > obs[0] > obs[1]  # productive > untried > over-chosen


@pytest.mark.parametrize("strategy", SELECTION_STRATEGIES)
def test_valid_ids_and_same_seed_same_picks(strategy):
    rng = np.random.default_rng(5)
    ids = np.sort(rng.choice(10_000, size=3000, replace=False))
    a = archive_of(rng.normal(size=3000), novelty=rng.exponential(size=3000), ids=ids)
    counts = LineageCounts.from_counts({int(i): 2 for i in ids[:100]}, {int(i): 1 for i in ids[50:150]})
    for n in (1, 7, 200):
        p1 = select_parents(strategy, a, counts, np.random.default_rng(42), n=n)
        p2 = select_parents(strategy, a, counts, np.random.default_rng(42), n=n)
        assert p1.dtype == np.int64 and p1.shape == (n,)
        np.testing.assert_array_equal(p1, p2)
        assert np.isin(p1, ids).all()
    assert select_parents(strategy, a, counts, np.random.default_rng(0), n=0).shape == (0,)


def test_two_level_sampler_matches_weights():
    rng = np.random.default_rng(3)
    m = 5000
    w = rng.exponential(size=m)
    w[:500] *= 10
    gen = np.random.default_rng(9)
    picks = np.concatenate([_weighted_choice(w, gen, 50) for _ in range(600)])
    assert picks.min() >= 0 and picks.max() < m
    groups = np.arange(m) // 250
    obs = np.bincount(groups[picks], minlength=20)
    assert chi2_ok(obs, np.bincount(groups, weights=w))
    big = _weighted_choice(w, np.random.default_rng(9), 30_000)  # the full-cumsum path
    assert chi2_ok(np.bincount(groups[big], minlength=20), np.bincount(groups, weights=w))


def test_selection_on_grid_archive_uses_members():
    a = make_archive("grid", space=SPACE, fitness_offset=0.0, seed=0)
    a.add(4, 1.0, [0.1, 0.1])
    a.add(9, 2.0, [0.9, 0.9])
    a.add(12, 3.0, [0.1, 0.1])  # replaces 4
    for s in SELECTION_STRATEGIES:
        picks = select_parents(s, a, LineageCounts(), np.random.default_rng(0), n=50)
        assert set(picks.tolist()) <= {9, 12}


def test_errors():
    a = archive_of(np.zeros(3))
    with pytest.raises(ValueError, match=r"unknown selection strategy 'best'.*uniform.*curiosity"):
        select_parents("best", a, LineageCounts(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty archive"):
        select_parents("uniform", make_archive("all", space=SPACE, fitness_offset=0.0, seed=0), LineageCounts(),
                       np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"unknown parameter.*'temperature'.*'fitness'"):
        select_parents("fitness", a, LineageCounts(), np.random.default_rng(0), temperature=2)
    with pytest.raises(ValueError, match="tournament size"):
        select_parents("tournament", a, LineageCounts(), np.random.default_rng(0), size=0)


def test_lineage_counts_grow_and_round_trip():
    c = LineageCounts(capacity=4)
    c.note_child(100_000)
    c.note_child(100_000)
    c.note_discovery(3)
    assert c.children(np.array([100_000, 3, 5_000_000])).tolist() == [2, 0, 0]
    assert c.discoveries([3]).tolist() == [1]
    assert c.chosen([100_000]).tolist() == [2]
    ch, di = c.to_counts()
    assert ch == {100_000: 2} and di == {3: 1}
    d = LineageCounts.from_counts(ch, di)
    assert d.children([100_000, 3]).tolist() == [2, 0] and d.discoveries([3, 100_000]).tolist() == [1, 0]
    with pytest.raises(ValueError):
        c.note_child(-1)


@pytest.mark.parametrize("kind", ["grid", "cvt", "novelty", "all"])
def test_restored_archive_gives_the_same_picks(kind):
    rng = np.random.default_rng(4)
    params = {"cells": 16, "samples": 400} if kind == "cvt" else {"threshold": 0.05} if kind == "novelty" else {}
    a = make_archive(kind, space=SPACE, fitness_offset=0.0, seed=1, **params)
    a.add_batch(range(400), rng.normal(size=400), rng.uniform(0, 1, size=(400, 2)))
    elites = a.elites()
    rng.shuffle(elites)
    b = restore_archive(schema=a.schema(), state=a.state(), elites=elites)
    counts = LineageCounts.from_counts({i: i % 3 for i in range(400)}, {i: i % 2 for i in range(400)})
    for s in SELECTION_STRATEGIES:
        np.testing.assert_array_equal(select_parents(s, a, counts, np.random.default_rng(8), n=20),
                                      select_parents(s, b, counts, np.random.default_rng(8), n=20))


def test_novelty_search_population_is_the_recent_members():
    from openended.qd import DescriptorSpace, make_archive
    from openended.selection import LineageCounts, select_parents

    space = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [0, 0], "upper": [1, 1], "bins": [40, 40]})
    rng = np.random.default_rng(3)
    for kind in ("all", "grid"):
        archive = make_archive(kind, space=space, fitness_offset=-1.0, seed=0)
        ids = rng.permutation(1000)[:600] if kind == "grid" else np.arange(600)
        for i in sorted(ids):
            archive.add(int(i), float(rng.random()), rng.random(2))
        picks = select_parents("novelty", archive, LineageCounts(), np.random.default_rng(0), n=2000, recent=50)
        newest = np.sort(archive.members()["agent_id"])[-50:]
        assert set(picks.tolist()) <= set(newest.tolist())
        everyone = select_parents("novelty", archive, LineageCounts(), np.random.default_rng(0), n=2000, recent=0)
        assert not set(everyone.tolist()) <= set(newest.tolist())



@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_members=st.integers(1, 600), n=st.integers(0, 80), recent=st.integers(0, 700),
       power=st.floats(0.25, 4.0), seed=st.integers(0, 2**32 - 1))
def test_novelty_parents_are_recent_members_and_seeded(n_members, n, recent, power, seed):
    """Any population size and power: a parent is an archive member, one of the ``recent`` newest
    when that is set, and the same generator state gives the same parents."""
    rng = np.random.default_rng(seed)
    archive = make_archive("all", space=SPACE, fitness_offset=-1.0, seed=0)
    archive.add_batch(range(n_members), rng.random(n_members), rng.random((n_members, 2)) ** 3)
    params = {"recent": recent, "power": power}
    p1 = select_parents("novelty", archive, LineageCounts(), np.random.default_rng(seed), n=n, **params)
    p2 = select_parents("novelty", archive, LineageCounts(), np.random.default_rng(seed), n=n, **params)
    assert p1.shape == (n,) and p1.dtype == np.int64
    np.testing.assert_array_equal(p1, p2)
    ids = archive.members()["agent_id"]
    assert np.isin(p1, ids if recent == 0 else ids[-recent:]).all()
