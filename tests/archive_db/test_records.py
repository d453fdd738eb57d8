"""check_outcome (the lifecycle rules, one place), typed Evaluation records, and the descriptor length."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import (
    FAIL_STAGES,
    AgentState,
    ArchiveDB,
    Evaluation,
    InvalidValueError,
    Outcome,
    Proposal,
    UnknownAgentError,
    check_outcome,
)

N_DESC = 2
FRESH = AgentState("proposed", has_genome=False, has_fitness=False)
FIXTURE_OK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
small_text = st.text(max_size=20)
json_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), finite_floats, small_text)
# File names are genome paths (openended.names.genome_path_problem): one segment, no NUL, newline or backslash.
files_st = st.dictionaries(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\n\r\\/"),
                                   min_size=1, max_size=8).filter(lambda name: name not in (".", "..")),
                           st.binary(max_size=64), min_size=1, max_size=3)


@st.composite
def valid_outcomes(draw, agent_id: int = 0) -> Outcome:
    """Any forward step a freshly proposed agent may take, with every optional field drawn."""
    status = draw(st.sampled_from(["mutated", "evaluated", "archived", "rejected", "failed"]))
    scored = status in ("evaluated", "archived", "rejected")
    failed = status == "failed"
    return Outcome(
        id=agent_id,
        status=status,
        files=draw(st.none() | files_st) if failed else draw(files_st),
        fitness=draw(finite_floats) if scored else draw(st.none() | finite_floats),
        descriptors=draw(st.lists(finite_floats, min_size=N_DESC, max_size=N_DESC)) if scored else None,
        metrics=draw(st.none() | st.dictionaries(small_text, json_values, max_size=4)),
        feedback=draw(st.none() | small_text),
        eval_seconds=draw(st.none() | st.floats(0, 1e6)),
        novelty=draw(st.none() | finite_floats),
        cell=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        archive_event=draw(st.sampled_from([None, "new_cell", "improved"])),
        fail_stage=draw(st.sampled_from(FAIL_STAGES)) if failed else None,
        fail_reason=draw(st.text(min_size=1, max_size=20)) if failed else None,
        tokens_in=draw(st.integers(0, 2**40)),
        tokens_out=draw(st.integers(0, 2**40)),
        cost=draw(st.floats(0, 1e9)),
        model=draw(st.none() | small_text),
    )


def new_db(path, schema=None) -> ArchiveDB:
    db = ArchiveDB(path)
    db.create_run(name="t", task="toy", seed=1, config={},
                  descriptor_schema={"names": ["x", "y"]} if schema is None else schema)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    return db


def _state(db: ArchiveDB) -> list:
    return [db.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("agents", "genomes", "blobs")]


# ---------------------------------------------------------------------------------------------
# check_outcome: a pure function of the outcome, the stored state and the descriptor length


@settings(max_examples=100, deadline=None)
@given(o=valid_outcomes(), bad=non_finite, field=st.sampled_from(["fitness", "novelty", "eval_seconds", "cost"]))
def test_a_non_finite_number_is_refused_naming_the_field(o, bad, field):
    check_outcome(o, FRESH, n_descriptors=N_DESC)  # the valid one passes
    with pytest.raises(InvalidValueError) as e:
        check_outcome(dataclasses.replace(o, **{field: bad}), FRESH, n_descriptors=N_DESC)
    assert f"agent 0: {field}" in str(e.value)


@settings(max_examples=100, deadline=None)
@given(o=valid_outcomes(), length=st.integers(0, 6).filter(lambda n: n != N_DESC), pad=finite_floats)
def test_descriptors_of_the_wrong_length_are_refused(o, length, pad):
    o = dataclasses.replace(o, descriptors=[pad] * length)
    with pytest.raises(InvalidValueError) as e:
        check_outcome(o, FRESH, n_descriptors=N_DESC)
    assert "agent 0: descriptors have length" in str(e.value) and f"expected {N_DESC}" in str(e.value)


@settings(max_examples=100, deadline=None)
@given(o=valid_outcomes(), bad=non_finite, where=st.integers(0, N_DESC - 1))
def test_non_finite_descriptors_are_refused(o, bad, where):
    desc = [0.0] * N_DESC
    desc[where] = bad
    with pytest.raises(InvalidValueError, match="agent 0: descriptors contain a non-finite value"):
        check_outcome(dataclasses.replace(o, descriptors=desc), FRESH, n_descriptors=N_DESC)


def test_check_outcome_refuses_what_is_not_an_outcome():
    with pytest.raises(InvalidValueError, match="Outcome objects"):
        check_outcome({"id": 0, "status": "mutated"}, FRESH)


# ---------------------------------------------------------------------------------------------
# through the store: refused writes nothing, valid round-trips


@FIXTURE_OK
@given(o=valid_outcomes(), bad=non_finite)
def test_record_refuses_a_non_finite_fitness_and_writes_nothing(tmp_path_factory, o, bad):
    with new_db(tmp_path_factory.mktemp("r") / "c.db") as db:
        before = _state(db)
        with pytest.raises(InvalidValueError, match="agent 0: fitness"):
            db.record([dataclasses.replace(o, fitness=bad)])
        assert _state(db) == before


@FIXTURE_OK
@given(o=valid_outcomes())
def test_a_valid_outcome_round_trips_through_record_and_agent(tmp_path_factory, o):
    with new_db(tmp_path_factory.mktemp("r") / "c.db") as db:
        db.record([o])
        row = db.agent(0)
        assert row["status"] == o.status and row["finish_seq"] == (None if o.status in ("mutated", "evaluated") else 1)
        for field in ("fitness", "descriptors", "metrics", "feedback", "eval_seconds", "novelty", "cell",
                      "archive_event", "fail_stage", "fail_reason", "tokens_in", "tokens_out", "cost", "model"):
            want = getattr(o, field)
            assert row[field] == (list(want) if field == "descriptors" and want is not None else want), field
        assert db.agent_files(0) == (o.files or {})


# ---------------------------------------------------------------------------------------------
# descriptor length: from the run row's top-level names, else from the first descriptors stored


def test_the_store_does_not_read_an_archive_schema_shape(tmp_path):
    """A nested schema (as a QD archive writes it) is opaque JSON to the store: the descriptor
    length then comes from the first descriptors stored, and every agent must share it."""
    schema = {"kind": "grid", "space": {"names": ["a", "b", "c"], "lower": [0, 0, 0]}}
    with new_db(tmp_path / "c.db", schema) as db:
        assert db.get_run()["descriptor_schema"] == schema
        db.propose([Proposal(id=i, parent_id=0, operator="d", seed=i) for i in (1, 2, 3)])
        with pytest.raises(InvalidValueError, match="agent 1: descriptors have length 1, expected 2"):
            db.record([Outcome(id=0, status="archived", files={"a": b"0"}, fitness=1.0, descriptors=[0, 0]),
                       Outcome(id=1, status="archived", files={"a": b"1"}, fitness=1.0, descriptors=[0])])
        db.record([Outcome(id=0, status="archived", files={"a": b"0"}, fitness=1.0, descriptors=[0, 0])])
        db.record([Outcome(id=1, status="archived", files={"a": b"1"}, fitness=1.0, descriptors=[1, 1])])
        with pytest.raises(InvalidValueError, match="agent 2: descriptors have length 3, expected 2"):
            db.record([Outcome(id=2, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[0, 0, 0])])


def test_top_level_names_fix_the_descriptor_length_from_the_first_record(tmp_path):
    with new_db(tmp_path / "c.db", {"names": ["x", "y", "z"]}) as db:
        with pytest.raises(InvalidValueError, match="agent 0: descriptors have length 2, expected 3"):
            db.record([Outcome(id=0, status="archived", files={"a": b"0"}, fitness=1.0, descriptors=[0, 0])])
        db.record([Outcome(id=0, status="archived", files={"a": b"0"}, fitness=1.0, descriptors=[0, 0, 0])])


# ---------------------------------------------------------------------------------------------
# evaluations are typed records


def test_add_evaluations_takes_evaluation_records(tmp_path):
    with new_db(tmp_path / "c.db") as db:
        db.add_evaluations([
            Evaluation(agent_id=0, stage="evaluate", seconds=0.5, exit_status=0, fitness=1.0, result={"fitness": 1.0},
                       stdout_tail="ok", failure_kind=None, started_at=100.0),
            Evaluation(agent_id=0, stage="evaluate", seconds=2.0, exit_status=137, failure_kind="timeout"),
        ])
        first, second = db.evaluations(0)
        assert first["result"] == {"fitness": 1.0} and first["started_at"] == 100.0 and first["stdout_tail"] == "ok"
        assert second["failure_kind"] == "timeout" and second["stderr_tail"] == "" and second["fitness"] is None
        db.add_evaluation(0, stage="full", seconds=0.25)  # the one-record form
        assert [e["stage"] for e in db.evaluations(0)] == ["evaluate", "evaluate", "full"]
        before = _state(db), db.evaluations(0)
        for bad, err, words in [
            ({"agent_id": 0, "stage": "x", "seconds": 1.0}, InvalidValueError, "Evaluation objects"),
            (Evaluation(agent_id=0, stage="x", seconds=math.nan), InvalidValueError, "agent 0: seconds"),
            (Evaluation(agent_id=0, stage="x", seconds=1.0, fitness=math.inf), InvalidValueError, "fitness"),
            (Evaluation(agent_id=0, stage="x", seconds=1.0, result={"f": math.nan}), InvalidValueError, "result"),
            (Evaluation(agent_id=0, stage="", seconds=1.0), InvalidValueError, "stage"),
            (Evaluation(agent_id=9, stage="x", seconds=1.0), UnknownAgentError, "9"),
        ]:
            with pytest.raises(err, match=words):
                db.add_evaluations([Evaluation(agent_id=0, stage="ok", seconds=1.0), bad])
        assert (_state(db), db.evaluations(0)) == before
