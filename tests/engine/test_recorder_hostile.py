"""Hostile results through the whole record path (check_result -> Recorder -> a real archive and store):
the driver never raises, a bad child fails with a reason naming the field, a good child is stored exactly."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import ArchiveDB, Proposal
from openended.engine.jobs import ChildResult
from openended.engine.recorder import Child, Counters, Recorder
from openended.portfolio import Portfolio
from openended.qd import make_archive
from openended.results import DESCRIPTOR_TOLERANCE, MAX_FEEDBACK_CHARS
from openended.sandbox.spec import EvaluationRecord
from openended.selection import LineageCounts

SPACE = {"names": ["a", "b"], "lower": [0.0, 0.0], "upper": [1.0, 1.0], "bins": [10, 10]}
FLOOR, TOP = 0.0, 1.0


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def _recorder(db: ArchiveDB, *, fitness_offset: float = FLOOR, fitness_upper: float | None = TOP,
              space: dict | None = None) -> Recorder:
    archive = make_archive("grid", space=space or SPACE, fitness_offset=fitness_offset)
    db.create_run(name="t", task="t", seed=0, config={}, descriptor_schema=archive.schema(),
                  state={"archive": archive.state()})
    return Recorder(db, archive, lineage=LineageCounts(), portfolio=Portfolio.build(["gaussian"], []),
                    counters=Counters(), n_descriptors=len(archive.space.names), dedupe=None,
                    driver_state=lambda: {"archive": archive.state()}, requeue=lambda job: None,
                    remember=lambda aid, files: None, fitness_upper=fitness_upper)


def _propose(db: ArchiveDB, rec: Recorder, ids: range) -> None:
    with db.transaction():
        db.propose([Proposal(i, None, "random", i) for i in ids])
    for i in ids:
        rec.children[i] = Child(None)


# ------------------------------------------------------------------------------------ strategies

no_surrogates = st.characters(exclude_categories=("Cs",))
good_text = st.text(no_surrogates, max_size=40)
good_number = st.floats(FLOOR, TOP) | st.integers(0, 1)
good_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | good_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(good_text, inner, max_size=4), max_leaves=20)
# A number a child might send that is no valid fitness or descriptor of this task.
bad_number = st.sampled_from([
    10**400, -(10**400), 10**309, float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-Infinity",
    "1e999", "0.5", None, True, False, [0.5], {"v": 0.5}, 1.5, -0.1, 1e308, -1e308, 1.0 + 1e-6, -1e-6,
])
surrogate_text = st.builds(lambda a, s, b: a + s + b, good_text, st.sampled_from(["\ud800", "\udfff", "\udc80x"]),
                           good_text)
bad_metrics = st.one_of(
    st.sampled_from([
        {"big": 10**400}, {"big": 2**63}, {"nan": float("nan")}, {"inf": float("-inf")}, {"deep": _deep(40)},
        {"deeper": _deep(100_000)}, {"huge": "x" * 20_000}, {"many": list(range(20_000))}, [1, 2], "metrics", 5,
        {"obj": object()}, {"set": {1, 2}}, {1: "int key"}, {"bytes": b"\xff"},
    ]),
    st.builds(lambda s: {"text": s}, surrogate_text),
    st.builds(lambda s: {s: 1}, surrogate_text),
)
bad_result = st.sampled_from([None, [], [0.5, [0.5, 0.5]], "result", 10**400, 0.5, True])


@st.composite
def results(draw):
    """(result, files, expectation): expectation is "good", "altered" (good; feedback cleaned or cut) or "bad"."""
    if draw(st.integers(0, 12)) == 0:
        return draw(bad_result), {"w": b"x"}, "bad"
    bad = draw(st.sets(st.sampled_from(["fitness", "descriptors", "metrics", "valid", "files"]), max_size=2))
    if draw(st.integers(0, 2)) > 0:
        bad = set()
    result: dict = {}
    result["fitness"] = draw(bad_number) if "fitness" in bad else draw(good_number)
    if "descriptors" in bad:
        result["descriptors"] = draw(st.one_of(
            st.lists(good_number, min_size=3, max_size=4), st.lists(good_number, max_size=1),
            st.sampled_from(["0.5,0.5", {"a": 0.5}, None, 7, _deep(10_000)]),
            st.lists(bad_number, min_size=2, max_size=2)))
    else:
        edge = st.sampled_from([1.0 + 0.5 * DESCRIPTOR_TOLERANCE, -0.5 * DESCRIPTOR_TOLERANCE])
        result["descriptors"] = draw(st.lists(good_number | edge, min_size=2, max_size=2))
    if "metrics" in bad:
        result["metrics"] = draw(bad_metrics)
    elif draw(st.booleans()):
        result["metrics"] = draw(st.dictionaries(good_text, good_json, max_size=5))
    if "valid" in bad:
        result["valid"] = draw(st.sampled_from([False, "yes", 1, None]))
    elif draw(st.booleans()):
        result["valid"] = True
    expectation = "bad" if bad else "good"
    kind = draw(st.integers(0, 5))
    if kind == 0:
        result["feedback"] = draw(surrogate_text)
        expectation = "altered" if expectation == "good" else expectation
    elif kind == 1:
        result["feedback"] = "f" * (MAX_FEEDBACK_CHARS + draw(st.integers(1, 10_000)))
        expectation = "altered" if expectation == "good" else expectation
    elif kind == 2:
        result["feedback"] = draw(good_text)
    files = {"weights.npy": draw(st.binary(max_size=16))}
    if "files" in bad:
        files = {draw(st.sampled_from(["", "a\x00b", "x\ud800.py", "n" * 2_000, "../evil.py", "/etc/passwd",
                                       "lib\\x.py", "lib//x.py", "./x.py"])): b"x"}
    return result, files, expectation


def _tails():
    return st.one_of(good_text, surrogate_text, st.just("e" * 100_000), st.just(""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.tuples(results(), _tails(), _tails()), min_size=1, max_size=5), data=st.data())
def test_arbitrary_results_never_crash_the_recorder(batch, data):
    with tempfile.TemporaryDirectory() as tmp, ArchiveDB(Path(tmp) / "c.db") as db:
        rec = _recorder(db)
        ids = range(len(batch))
        _propose(db, rec, ids)
        child_results = [
            ChildResult(i, files=files, result=result, eval_seconds=0.1,
                        evaluation=EvaluationRecord(0.1, 0, None, out, err))
            for i, ((result, files, _), out, err) in zip(ids, batch, strict=True)]
        rec.evaluations(child_results)  # never raises
        assert db.progress_counts()["pending"] == 0
        rec.archive.stats()
        for i, ((result, _files, expectation), _out, _err) in zip(ids, batch, strict=True):
            row = db.agent(i)
            if expectation == "bad":
                assert row["status"] == "failed" and row["fail_stage"] == "invalid", (result, row)
                assert row["fail_reason"]
                continue
            assert row["status"] in ("archived", "rejected"), (result, row)
            assert row["fitness"] == float(result["fitness"])
            assert row["descriptors"] == [float(d) for d in result["descriptors"]]
            assert row["metrics"] == result.get("metrics", {})
            feedback = result.get("feedback", "")
            if expectation == "good":
                assert row["feedback"] == feedback
            else:
                assert len(row["feedback"]) <= MAX_FEEDBACK_CHARS
                row["feedback"].encode("utf-8")
            for ev in db.evaluations(i):
                ev["stdout_tail"].encode("utf-8")
                ev["stderr_tail"].encode("utf-8")
        with sqlite3.connect(Path(tmp) / "c.db") as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize(("result", "reason"), [
    ({"fitness": 10**400, "descriptors": [0.5, 0.5]}, "fitness is an integer of 1329 bits"),
    ({"fitness": 0.5, "descriptors": [0.5, -(10**400)]}, "descriptors[1] is an integer"),
    ({"fitness": 1.5, "descriptors": [0.5, 0.5]}, "fitness = 1.5 is above the task's upper bound 1.0"),
    ({"fitness": -1.0, "descriptors": [0.5, 0.5]}, "fitness = -1.0 is below the task's lower bound 0.0"),
    ({"fitness": 0.5, "descriptors": [0.5, 1.001]}, "descriptors[1] = 1.001 is above the task's upper bound 1.0"),
    ({"fitness": 0.5, "descriptors": [0.5, 0.5], "metrics": {"a": [{"b": "\ud800"}]}},
     "metrics['a'][0]['b'] holds a lone surrogate"),
    ({"fitness": 0.5, "descriptors": [0.5, 0.5], "metrics": {"d": _deep(200_000)}}, "nested deeper than 32"),
])
def test_known_crashers_fail_the_child_as_invalid_naming_the_field(tmp_path, result, reason):
    with ArchiveDB(tmp_path / "c.db") as db:
        rec = _recorder(db)
        _propose(db, rec, range(2))
        rec.evaluations([ChildResult(0, files={"w": b"0"}, result=result),
                         ChildResult(1, files={"w": b"1"}, result={"fitness": 0.5, "descriptors": [0.5, 0.5]})])
        row = db.agent(0)
        assert (row["status"], row["fail_stage"]) == ("failed", "invalid")
        assert reason in row["fail_reason"]
        assert db.agent(1)["status"] == "archived"  # the rest of the batch is recorded as usual


def test_lone_surrogate_feedback_is_stored_replaced(tmp_path):
    with ArchiveDB(tmp_path / "c.db") as db:
        rec = _recorder(db)
        _propose(db, rec, range(1))
        rec.evaluations([ChildResult(0, files={"w": b"0"}, evaluation=EvaluationRecord(0.1, 0, None, "o\ud800", ""),
                                     result={"fitness": 0.5, "descriptors": [0.5, 0.5], "feedback": "a\ud800b"})])
        assert db.agent(0)["feedback"] == "a\ufffdb"
        assert db.evaluations(0)[0]["stdout_tail"] == "o\ufffd"


def test_elites_near_the_largest_double_do_not_overflow_the_statistics(tmp_path):
    with ArchiveDB(tmp_path / "c.db") as db:
        rec = _recorder(db, fitness_offset=-1.7e308, fitness_upper=None)
        _propose(db, rec, range(3))
        rec.evaluations([ChildResult(i, files={"w": bytes([i])}, result={"fitness": 1.7e308, "descriptors": [d, d]})
                         for i, d in enumerate([0.05, 0.55, 0.95])])
        assert all(db.agent(i)["status"] == "archived" for i in range(3))
        stats = rec.archive.stats()
        assert stats["qd_score"] == 1.7976931348623157e308 and stats["mean_fitness"] == 1.7e308


def test_a_child_whose_step_cannot_be_stored_fails_as_internal_and_the_batch_goes_on(tmp_path, monkeypatch):
    with ArchiveDB(tmp_path / "c.db") as db:
        rec = _recorder(db)
        _propose(db, rec, range(3))
        record = db.record

        def refuse_agent_1(outcomes):
            if any(o.id == 1 and o.status != "failed" for o in outcomes):
                raise RuntimeError("disk says no\nfor agent 1")
            return record(outcomes)

        monkeypatch.setattr(db, "record", refuse_agent_1)
        rec.evaluations([ChildResult(i, files={"w": bytes([i])},
                                     result={"fitness": 0.5, "descriptors": [0.1 + i / 4] * 2}) for i in range(3)])
        assert db.agent(0)["status"] == "archived" and db.agent(2)["status"] == "archived"
        row = db.agent(1)
        assert (row["status"], row["fail_stage"]) == ("failed", "internal")
        assert row["fail_reason"] == "recording this child failed: RuntimeError: for agent 1"
        assert rec.counters.failed == 1 and rec.counters.done == 2
