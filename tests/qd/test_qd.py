"""Quality-diversity archives: add semantics, novelty, statistics, restore, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openended.qd import (
    ARCHIVE_KINDS,
    AddResult,
    DescriptorSpace,
    make_archive,
    restore_archive,
)

SPACE = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [0.0, -1.0], "upper": [10.0, 4.0], "bins": [5, 4]})
PARAMS = {"grid": {}, "cvt": {"cells": 16, "samples": 800}, "novelty": {"threshold": 0.5}, "all": {}}
_EMPTY = {kind: make_archive(kind, space=SPACE, fitness_offset=-10.0, seed=3, **PARAMS[kind]) for kind in ARCHIVE_KINDS}

HSET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh(kind: str):
    """A new empty archive of kind (restored from a cached schema: skips the CVT k-means)."""
    a = _EMPTY[kind]
    return restore_archive(schema=a.schema(), state=a.state(), elites=[])


coord = st.floats(-2.0, 12.0, allow_nan=False)
child = st.tuples(st.floats(-9.0, 9.0, allow_nan=False), coord, coord)
children = st.lists(child, min_size=1, max_size=60)


def brute_novelty(members: np.ndarray, X: np.ndarray, k: int, empty: float) -> np.ndarray:
    if len(members) == 0:
        return np.full(len(X), empty)
    D = np.linalg.norm(X[:, None, :] - members[None, :, :], axis=2)
    return np.sort(D, axis=1)[:, : min(k, len(members))].mean(axis=1)


# ------------------------------------------------------------------ add semantics
@pytest.mark.parametrize("kind", ["grid", "cvt"])
@HSET
@given(stream=children)
def test_elite_never_replaced_by_worse_or_equal(kind, stream):
    a = fresh(kind)
    best: dict[int, tuple[float, int]] = {}
    for i, (f, x, y) in enumerate(stream):
        r = a.add(i, f, [x, y])
        cell = a.measurement_cell([x, y])  # the cell the child maps to
        if cell not in best:
            assert r == AddResult("new_cell", r.novelty, cell, None)
            best[cell] = (f, i)
        elif f > best[cell][0]:
            assert r == AddResult("improved", r.novelty, cell, best[cell][1])
            best[cell] = (f, i)
        else:
            assert r == AddResult("not_added", r.novelty, None, None)
        m = a.members()
        got = {int(c): (float(fi), int(ai)) for c, fi, ai in zip(m["cell"], m["fitness"], m["agent_id"], strict=True)}
        assert got == best
    st_ = a.stats()
    assert st_["size"] == len(best)
    assert st_["coverage"] == len(best) / st_["cells"]
    assert st_["qd_score"] == pytest.approx(sum(f - (-10.0) for f, _ in best.values()))
    assert st_["max_fitness"] == max(f for f, _ in best.values())


def test_grid_clips_out_of_bounds_into_edge_cells():
    a = fresh("grid")
    assert a.add(0, 1.0, [-100.0, -100.0]).cell == 0
    assert a.add(1, 1.0, [100.0, 100.0]).cell == 5 * 4 - 1
    assert a.add(2, 1.0, [10.0, 4.0]).status == "not_added"  # upper bound is in the last cell
    assert a.schema()["edges"][0] == np.linspace(0, 10, 6).tolist()


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
@HSET
@given(stream=children)
def test_coverage_and_qd_never_decrease(kind, stream):
    a = fresh(kind)
    prev = a.stats()
    assert prev["coverage"] == 0.0 and prev["qd_score"] == 0.0 and prev["max_fitness"] is None
    for i, (f, x, y) in enumerate(stream):
        a.add(i, f, [x, y])
        s = a.stats()
        assert s["coverage"] >= prev["coverage"]
        assert s["qd_score"] >= prev["qd_score"] - 1e-9
        assert s["size"] >= prev["size"]
        prev = s


@pytest.mark.parametrize("kind", ["novelty", "all"])
@HSET
@given(stream=children)
def test_grid_measured_stats_match_brute_force(kind, stream):
    a = fresh(kind)
    a.add_batch(range(len(stream)), [s[0] for s in stream], [s[1:] for s in stream])
    m = a.members()
    cells = np.clip(np.floor((m["descriptors"] - SPACE.lower) / (SPACE.upper - SPACE.lower) * SPACE.bins), 0,
                    np.array(SPACE.bins) - 1).astype(int)
    flat = cells[:, 0] * 4 + cells[:, 1]
    best = {}
    for c, f in zip(flat.tolist(), m["fitness"].tolist(), strict=True):
        best[c] = max(best.get(c, -np.inf), f)
    s = a.stats()
    assert s["coverage"] == len(best) / 20
    assert s["qd_score"] == pytest.approx(sum(f + 10.0 for f in best.values()))
    assert s["mean_fitness"] == pytest.approx(float(np.mean(m["fitness"])))


@HSET
@given(stream=children)
def test_all_admits_everything_as_own_cell(stream):
    a = fresh("all")
    results = a.add_batch(range(len(stream)), [s[0] for s in stream], [s[1:] for s in stream])
    assert [r.status for r in results] == ["new_cell"] * len(stream)
    assert [r.cell for r in results] == list(range(len(stream)))
    assert all(r.replaced is None for r in results)
    assert a.size == len(stream)
    np.testing.assert_array_equal(a.members()["agent_id"], np.arange(len(stream)))


def test_novelty_first_child_always_admitted_then_threshold_rule():
    a = make_archive("novelty", space=SPACE, fitness_offset=0.0, seed=0, threshold=1e9)
    r = a.add(0, 0.0, [1.0, 1.0])
    assert r.status == "new_cell" and r.cell == 0 and r.novelty == 0.0  # nothing to be far from
    assert a.add(1, 5.0, [9.0, 3.0]).status == "not_added"


def test_novelty_threshold_lowered_after_stagnation():
    a = make_archive("novelty", space=SPACE, fitness_offset=0.0, seed=0, threshold=1.0, stagnation=10, k=3)
    a.add(0, 0.0, [5.0, 1.0])
    for i in range(9):
        assert a.add(1 + i, 0.0, [5.0, 1.0]).status == "not_added"
    assert a.state()["threshold"] == 1.0
    a.add(10, 0.0, [5.0, 1.0])
    assert a.state()["threshold"] == pytest.approx(0.95)
    for i in range(10):
        a.add(11 + i, 0.0, [5.0, 1.0])
    assert a.state()["threshold"] == pytest.approx(0.95**2)


def test_novelty_threshold_raised_after_burst_of_admissions():
    a = make_archive("novelty", space=SPACE, fitness_offset=0.0, seed=0, threshold=0.1, admit_limit=4, window=100, k=3)
    for i in range(5):
        assert a.add(i, 0.0, [2.0 * i, 0.0]).status == "new_cell"
    assert a.state()["threshold"] == pytest.approx(0.12)
    assert a.state()["window_adds"] == 0
    # a slow trickle (4 admissions spread over more than a window) does not raise it
    b = make_archive("novelty", space=SPACE, fitness_offset=0.0, seed=0, threshold=0.1, admit_limit=4, window=10, k=3)
    for i in range(5):
        b.add(2 * i, 0.0, [2.0 * i, 0.0])
        for j in range(9):
            b.add(2 * i + 100 * (j + 1), 0.0, [2.0 * i, 0.0])  # duplicates: not admitted
    assert b.state()["threshold"] == 0.1


def test_novelty_never_improves_and_cells_are_member_indices():
    a = fresh("novelty")
    rng = np.random.default_rng(0)
    res = a.add_batch(range(500), rng.normal(size=500), rng.uniform(0, 10, size=(500, 2)))
    assert {r.status for r in res} <= {"new_cell", "not_added"}
    cells = [r.cell for r in res if r.status == "new_cell"]
    assert cells == list(range(a.size))


# ------------------------------------------------------------------ novelty values
@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_novelty_equals_brute_force_knn_with_tree_and_tail(kind):
    rng = np.random.default_rng(1)
    params = {"cvt": {"cells": 300, "samples": 3000}, "novelty": {"threshold": 0.02, "raise_factor": 1.0}}
    a = make_archive(kind, space=SPACE, fitness_offset=-10.0, seed=0, k=7, **params.get(kind, {}))
    if kind == "grid":
        a = make_archive("grid", space=DescriptorSpace.from_dict({**SPACE.to_dict(), "bins": [40, 30]}),
                         fitness_offset=-10.0, seed=0, k=7)
    X = rng.uniform(-1, 11, size=(4000, 2))
    F = rng.normal(size=4000)
    empty = 0.0
    Q = rng.uniform(-1, 11, size=(200, 2))
    np.testing.assert_allclose(a.novelty(Q), brute_novelty(np.empty((0, 2)), Q, 7, empty))
    saw_tree_and_tail = saw_dirty = False
    for start in range(0, 4000, 100):
        res = a.add_batch(range(start, start + 100), F[start:start + 100], X[start:start + 100])
        m = a.members()["descriptors"]
        np.testing.assert_allclose(a.novelty(Q), brute_novelty(m, Q, 7, empty), rtol=1e-12, atol=1e-12)
        index = a.novelty_index
        saw_tree_and_tail |= 0 < index.indexed < a.size
        saw_dirty |= index.stale > 0
        # the novelty reported at admission is the brute force over the members before it
        assert res[0].novelty >= 0
    if kind in ("novelty", "all"):
        assert saw_tree_and_tail
    if kind in ("grid", "cvt"):
        assert saw_dirty  # replaced elites inside the indexed prefix were exercised


def test_add_reports_novelty_before_insertion():
    a = fresh("all")
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 10, size=(400, 2))
    for i, x in enumerate(X):
        expected = brute_novelty(X[:i], x[None], a.k, 0.0)[0]
        assert a.add(i, 0.0, x).novelty == pytest.approx(expected, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(a.members()["novelty"][1:], brute_novelty_prefix(X, a.k)[1:], rtol=1e-12)


def brute_novelty_prefix(X, k):
    return np.array([brute_novelty(X[:i], X[i][None], k, 0.0)[0] for i in range(len(X))])


# ------------------------------------------------------------------ restore
def _roundtrip(a):
    j = json.loads(json.dumps({"schema": a.schema(), "state": a.state(), "elites": a.elites()}))
    return restore_archive(schema=j["schema"], state=j["state"], elites=j["elites"])


def _elites_from_members(a):
    m = a.members()
    return [{"cell": int(c), "agent_id": int(i), "fitness": float(f), "descriptors": d.tolist(), "novelty": float(n)}
            for c, i, f, d, n in zip(m["cell"], m["agent_id"], m["fitness"], m["descriptors"], m["novelty"],
                                     strict=True)]


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_before=st.integers(0, 700))
def test_restore_reproduces_archive_and_future_adds(kind, seed, n_before):
    rng = np.random.default_rng(seed)
    a = fresh(kind)
    X = rng.uniform(-1, 11, size=(n_before + 300, 2))
    X[::7] = X[::7].round(0)  # some exact duplicates and ties
    F = rng.normal(size=n_before + 300).round(1)
    a.add_batch(range(n_before), F[:n_before], X[:n_before])
    elites = _elites_from_members(a)
    rng.shuffle(elites)  # the store may return them in any order
    b = restore_archive(schema=json.loads(json.dumps(a.schema())), state=json.loads(json.dumps(a.state())),
                        elites=elites)
    assert b.stats() == a.stats()
    assert b.state() == a.state()
    ma, mb = a.members(), b.members()
    for key in ma:
        np.testing.assert_array_equal(ma[key], mb[key])
    ra = [a.add(n_before + i, F[n_before + i], X[n_before + i]) for i in range(300)]
    rb = b.add_batch(range(n_before, n_before + 300), F[n_before:], X[n_before:])
    assert ra == rb
    assert a.stats() == b.stats() and a.state() == b.state()
    c = _roundtrip(b)
    assert c.stats() == b.stats()


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_schema_and_state_are_json_round_trippable(kind):
    a = fresh(kind)
    a.add_batch(range(50), np.linspace(-1, 1, 50), np.random.default_rng(0).uniform(0, 10, size=(50, 2)))
    for doc in (a.schema(), a.state()):
        assert json.loads(json.dumps(doc)) == doc
    s = a.schema()
    assert s["kind"] == kind and s["space"] == SPACE.to_dict() and s["fitness_offset"] == -10.0 and s["k"] == 15
    if kind == "cvt":
        assert np.asarray(s["centroids"]).shape == (16, 2)
    else:
        assert [len(e) for e in s["edges"]] == [6, 5]


def test_cvt_centroids_are_seeded_and_restore_uses_stored_ones():
    a = make_archive("cvt", space=SPACE, fitness_offset=0.0, seed=5, cells=32, samples=1000)
    b = make_archive("cvt", space=SPACE, fitness_offset=0.0, seed=5, cells=32, samples=1000)
    c = make_archive("cvt", space=SPACE, fitness_offset=0.0, seed=6, cells=32, samples=1000)
    assert a.schema() == b.schema() and a.schema() != c.schema()
    assert np.all(a.centroids >= SPACE.lower) and np.all(a.centroids <= SPACE.upper)
    schema = a.schema()
    schema["centroids"][0] = [9.99, 3.99]
    r = restore_archive(schema=schema, state=a.state(), elites=[])
    assert r.add(0, 0.0, [9.99, 3.99]).cell == 0


def test_members_are_ordered_by_cell_and_read_only():
    a = fresh("grid")
    a.add(7, 1.0, [9.0, 3.5])
    a.add(8, 1.0, [0.5, -0.5])
    m = a.members()
    assert m["cell"].tolist() == sorted(m["cell"].tolist())
    assert m["agent_id"].tolist() == [8, 7]
    with pytest.raises(ValueError):
        m["fitness"][0] = 3.0


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_bad_descriptors_raise_naming_the_problem(kind):
    a = fresh(kind)
    with pytest.raises(ValueError, match="expected 2 descriptors"):
        a.add(0, 1.0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="expected 2 descriptors"):
        a.add(0, 1.0, [1.0])
    with pytest.raises(ValueError, match="'y' is not finite"):
        a.add(0, 1.0, [1.0, float("nan")])
    with pytest.raises(ValueError, match="'x' is not finite"):
        a.add(0, 1.0, [float("inf"), 0.0])
    with pytest.raises(ValueError, match="fitness is not finite"):
        a.add(0, float("nan"), [1.0, 1.0])
    with pytest.raises(ValueError, match="'y' of row 1 is not finite"):
        a.add_batch([0, 1], [1.0, 2.0], [[1.0, 1.0], [1.0, float("nan")]])
    with pytest.raises(ValueError, match="shape"):
        a.novelty([[1.0, 2.0, 3.0]])
    assert a.size == 0  # nothing partially added


def test_make_archive_unknown_kind_and_params():
    with pytest.raises(ValueError, match=r"unknown archive kind 'mapelites'.*grid, cvt, novelty, all"):
        make_archive("mapelites", space=SPACE, fitness_offset=0.0, seed=0)
    with pytest.raises(ValueError, match=r"unknown parameter.*bogus.*'grid'"):
        make_archive("grid", space=SPACE, fitness_offset=0.0, seed=0, bogus=1)
    with pytest.raises(ValueError, match="unknown archive kind"):
        restore_archive(schema={"kind": "nope"}, state={}, elites=[])


@pytest.mark.parametrize(
    "space, match",
    [
        ({"names": ["x", "y"], "lower": [0, 0], "upper": [1], "bins": [2, 2]}, "1 upper"),
        ({"names": ["x", "y"], "lower": [0, 3], "upper": [1, 2], "bins": [2, 2]}, "'y': lower"),
        ({"names": ["x"], "lower": [0], "upper": [float("inf")], "bins": [2]}, "'x': bounds must be finite"),
        ({"names": ["x", "y"], "lower": [0, 0], "upper": [1, 1], "bins": [2, 0]}, "'y': bins"),
        ({"names": ["x", "x"], "lower": [0, 0], "upper": [1, 1], "bins": [2, 2]}, "unique"),
        ({"names": ["x"], "lower": [0], "upper": [1]}, "missing"),
    ],
)
def test_descriptor_space_validation(space, match):
    with pytest.raises(ValueError, match=match):
        DescriptorSpace.from_dict(space)


def test_descriptor_space_round_trip_and_equality():
    d = SPACE.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert DescriptorSpace.from_dict(d) == SPACE
    assert hash(DescriptorSpace.from_dict(d)) == hash(SPACE)


def test_empty_archive_stats_and_novelty():
    for kind in ARCHIVE_KINDS:
        a = fresh(kind)
        s = a.stats()
        assert s["size"] == 0 and s["coverage"] == 0.0 and s["qd_score"] == 0.0
        assert s["max_fitness"] is None and s["mean_fitness"] is None
        assert a.novelty([[1.0, 1.0]])[0] == 0.0
        assert all(len(v) == 0 for v in a.members().values())
