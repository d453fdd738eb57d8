"""The stager's decisions on their own (no Ray): for any stage results, a child runs stages in order and
stops at the first whose rule it fails; only that last result reaches the recorder, as terminal."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from openended.engine.jobs import ChildResult, Evaluate
from openended.engine.recorder import Child
from openended.engine.stages import Stager
from openended.results import Bounds
from openended.sandbox.spec import EvaluationRecord, Limits
from openended.tasks.spec import StageSpec

PARENT_FITNESS = -1.0
STAGES = [StageSpec(name="quick", min_fitness=-2.0), StageSpec(name="medium", beats="parent"),
          StageSpec(name="full")]


class FakeRecorder:
    def __init__(self):
        self.children = {5: Child(parent_id=1)}
        self.n_descriptors = 1
        self.bounds = Bounds()
        self.counters = SimpleNamespace(spend=lambda r: None)
        self.committed: list = []
        self.terminal: list[ChildResult] = []

    def commit(self, outcomes, *, evaluations=()):
        self.committed.append((list(outcomes), list(evaluations)))

    def evaluations(self, results):
        self.terminal.extend(results)


class FakeDB:
    def __init__(self):
        self.status = "proposed"

    def agents_by_status(self, status):
        return []

    def agent(self, agent_id):
        return {"fitness": PARENT_FITNESS} if agent_id == 1 else {"status": self.status}


def _stager(partial_final: bool) -> tuple[Stager, FakeRecorder, list]:
    recorder, queued = FakeRecorder(), []
    task = SimpleNamespace(spec=SimpleNamespace(stages=STAGES, partial_is_final=partial_final))
    campaign = SimpleNamespace(task=task, recorder=recorder, db=FakeDB(), archive=None, _requeue=queued.append,
                               state={}, config=SimpleNamespace(task_timeout_seconds=None),
                               sandbox=SimpleNamespace(kind="inprocess", limits=Limits()), _task_timeout=10.0)
    return Stager(campaign), recorder, queued  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(fitness=st.lists(st.floats(min_value=-5.0, max_value=0.0), min_size=3, max_size=3),
       partial_final=st.booleans())
def test_a_child_stops_at_the_first_rule_it_fails(fitness, partial_final):
    stager, recorder, queued = _stager(partial_final)
    expected = 1 if fitness[0] < -2.0 else 2 if fitness[1] <= PARENT_FITNESS else 3
    ran = 0
    job = None
    while not recorder.terminal:
        assert ran < 3
        stage = 0 if job is None else job.stage
        assert stage == ran  # the next stage goes out, never one skipped or repeated
        files = {"weights.npy": b"x"}
        stager.evaluations([ChildResult(5, files=files, result={"fitness": fitness[stage], "descriptors": [0.0]},
                                        evaluation=EvaluationRecord(seconds=0.1, stage=STAGES[stage].name))])
        ran += 1
        if not recorder.terminal:
            job = queued.pop()
            assert isinstance(job, Evaluate) and not queued
    assert ran == expected
    (last,) = recorder.terminal
    assert last.result["metrics"]["stage_reached"] == STAGES[expected - 1].name
    assert last.partial == (expected < 3 and not partial_final)  # kept out of the archive unless final
    # each passed stage committed its own row, with the stage's fitness, before the next went out
    rows = [ev for _, evaluations in recorder.committed for ev in evaluations]
    assert [(r.stage, r.fitness) for r in rows] == [(STAGES[i].name, fitness[i]) for i in range(expected - 1)]
    assert not stager.next  # nothing left waiting for this child
