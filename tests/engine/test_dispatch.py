"""The dispatcher's scheduling, with a fake executor (no Ray): batching, isolation, deadlines, waiting mutations."""

from __future__ import annotations

import time
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from openended.engine.dispatch import ENGINE_LOSSES_PER_CHILD, Dispatcher, NodeUnusable, TaskLost
from openended.engine.jobs import Breed, ChildResult, Evaluate, Mutate
from openended.llm import ModelSpec
from openended.names import LOCAL_MODEL


class FakeExecutor:
    """Runs nothing: records what was sent; a test says which tasks finish and how."""

    def __init__(self):
        self.sent: dict[int, tuple[str, list]] = {}
        self.finished: dict[int, object] = {}  # handle -> list[ChildResult] or an exception
        self.cancelled: list[int] = []
        self.collected: set[int] = set()
        self._next = 0

    def _handle(self, kind, jobs):
        self._next += 1
        self.sent[self._next] = (kind, jobs)
        return self._next

    def evaluate(self, jobs):
        return self._handle("evaluate", list(jobs))

    def mutate(self, job, model):
        return self._handle("mutate", [job])

    def ready(self, handles, timeout):
        return [h for h in handles if h in self.finished]

    def result(self, handle):
        out = self.finished.pop(handle)
        self.collected.add(handle)
        if isinstance(out, Exception):
            raise out
        return out

    def cancel(self, handle):
        self.cancelled.append(handle)

    # test helpers
    def succeed(self, handle, **fields):
        self.finished[handle] = [ChildResult(j.agent_id, result={"fitness": 0.0}, **fields)
                                 for j in self.sent[handle][1]]

    def open(self):
        return [h for h in self.sent if h not in self.finished and h not in self.cancelled and h not in self.collected]


def make(executor, deliver=None, **kw):
    args = dict(max_in_flight=2, batch_size=4, cpus=2, task_timeout=60.0, models={})
    args.update(kw)
    got: list = []
    d = Dispatcher(executor, deliver or (lambda mutation, results: got.append((mutation, results))), **args)
    d.got = got
    return d


def collect(d, timeout=0):
    """What the dispatcher delivered during one collect."""
    d.got.clear()
    d.collect(timeout)
    return list(d.got)


def breeder(start=0):
    counter = iter(range(start, 10**6))

    def propose(n):
        return [Breed(next(counter), seed=0, operator="gaussian") for _ in range(n)]
    return propose


def no_proposals(n):
    return []


def test_batches_fill_up_to_max_in_flight_and_leave_the_rest_queued():
    ex = FakeExecutor()
    d = make(ex)
    for i in range(10):
        d.queue(Evaluate(i, {"a": b""}))
    d.fill(no_proposals)
    assert [[j.agent_id for j in jobs] for _, jobs in ex.sent.values()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [j.agent_id for j in d.pending] == [8, 9]
    assert d.children_in_flight == 8


def test_new_children_are_proposed_only_when_the_queue_is_empty():
    ex = FakeExecutor()
    d = make(ex, max_in_flight=3)
    d.queue(Evaluate(100, {"a": b""}))
    asked = []

    def propose(n):
        asked.append(n)
        return breeder(len(asked) * 10)(n)
    d.fill(propose)
    batches = [[j.agent_id for j in jobs] for _, jobs in ex.sent.values()]
    # The queued child goes first and its batch is topped up; then whole batches of new children.
    assert batches[0][0] == 100 and len(batches[0]) == 4 and asked[0] == 3
    assert asked[1:] == [4, 4] and len(batches) == 3


def test_a_failed_batch_is_rerun_one_child_per_task_and_only_the_culprit_fails():
    ex = FakeExecutor()
    d = make(ex, max_in_flight=3, batch_size=3)
    for i in range(3):
        d.queue(Evaluate(i, {"a": b""}))
    d.fill(no_proposals)
    (h,) = ex.open()
    ex.finished[h] = [ChildResult(i, fail_stage="sandbox", fail_reason="oom", batch_failure=True) for i in range(3)]
    assert collect(d) == []  # nothing is recorded for a failed batch
    assert [j.agent_id for j in d.pending] == [0, 1, 2]
    d.fill(no_proposals)
    singles = ex.open()
    assert [[j.agent_id for j in ex.sent[s][1]] for s in singles] == [[0], [1], [2]]
    ex.succeed(singles[0])
    ex.succeed(singles[2])
    ex.finished[singles[1]] = [ChildResult(1, fail_stage="sandbox", fail_reason="oom", batch_failure=False)]
    results = [r for _, rs in collect(d) for r in rs]
    assert sorted((r.agent_id, r.failed) for r in results) == [(0, False), (1, True), (2, False)]


def test_a_lost_worker_isolates_a_batch_and_fails_a_lone_child():
    ex = FakeExecutor()
    d = make(ex, max_in_flight=1, batch_size=2)
    d.queue(Evaluate(0, {"a": b""}))
    d.queue(Evaluate(1, {"a": b"x"}))
    d.fill(no_proposals)
    ex.finished[ex.open()[0]] = TaskLost("the actor died")
    assert collect(d) == []
    d.fill(no_proposals)
    (h,) = ex.open()
    assert [j.agent_id for j in ex.sent[h][1]] == [0]
    ex.finished[h] = TaskLost("the actor died")
    [(mutation, [r])] = collect(d)
    assert not mutation and r.agent_id == 0 and r.fail_stage == "sandbox"
    assert r.fail_reason.startswith("worker failed: the actor died") and r.files == {"a": b""}


def test_a_task_past_its_deadline_is_cancelled_and_its_child_fails_as_timeout():
    ex = FakeExecutor()
    d = make(ex, task_timeout=0.01, batch_size=1)
    d.queue(Evaluate(7, {"a": b""}))
    d.fill(no_proposals)
    time.sleep(0.05)
    [(_, [r])] = collect(d)
    assert r.agent_id == 7 and r.fail_stage == "timeout" and r.fail_reason.startswith("no result within")
    assert ex.cancelled == [1] and d.in_flight == 0


def test_mutations_for_a_serial_model_wait_and_other_work_passes_them():
    ex = FakeExecutor()
    spec = ModelSpec(name=LOCAL_MODEL, base_url="http://127.0.0.1:1/v1", model="m")
    d = make(ex, max_in_flight=4, batch_size=1, models={LOCAL_MODEL: spec})
    d.queue(Mutate(0, 0, "llm_diff", model=LOCAL_MODEL))
    d.queue(Mutate(1, 0, "llm_diff", model=LOCAL_MODEL))
    d.queue(Evaluate(2, {"a": b""}))
    d.fill(no_proposals)
    kinds = [(kind, jobs[0].agent_id) for kind, jobs in ex.sent.values()]
    assert kinds == [("mutate", 0), ("evaluate", 2)]  # one call to the local model at a time
    assert [j.agent_id for j in d.pending] == [1]
    ex.finished[1] = [ChildResult(0, files={"a": b"1"}, model=LOCAL_MODEL)]
    [(mutation, _)] = collect(d)
    assert mutation
    d.fill(no_proposals)
    assert ex.sent[3] == ("mutate", [Mutate(1, 0, "llm_diff", model=LOCAL_MODEL)])


def test_spent_budget_sends_evaluations_only_and_holds_mutations():
    ex = FakeExecutor()
    d = make(ex)
    d.queue(Mutate(0, 0, "ast"))
    d.queue(Evaluate(1, {"a": b""}))
    d.fill(breeder(10), evaluations_only=True)
    assert [(kind, [j.agent_id for j in jobs]) for kind, jobs in ex.sent.values()] == [("evaluate", [1])]
    assert [j.agent_id for j in d.pending] == [0]


def test_an_unpreparable_mutation_or_unknown_model_fails_without_a_task():
    ex = FakeExecutor()
    d = make(ex)
    d.queue(Mutate(0, 0, "llm_diff", model="m", unprepared="cannot build the prompt: no code"))
    d.queue(Mutate(1, 0, "llm_diff", model="nobody"))
    d.fill(no_proposals)
    assert ex.sent == {}
    results = [r for _, rs in d.got for r in rs]  # delivered at once, before anything else is proposed
    assert [(r.agent_id, r.fail_stage) for r in results] == [(0, "mutation"), (1, "mutation")]
    assert "cannot build the prompt" in results[0].fail_reason
    assert "'nobody' is not configured" in results[1].fail_reason


def test_cancel_all_puts_jobs_in_flight_back_in_the_queue():
    ex = FakeExecutor()
    d = make(ex)
    d.fill(breeder())
    assert d.children_in_flight == 8
    d.cancel_all()
    assert d.in_flight == 0 and sorted(j.agent_id for j in d.pending) == list(range(8))
    assert sorted(ex.cancelled) == [1, 2]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 30), batch=st.integers(1, 5), slots=st.integers(1, 4),
       fates=st.lists(st.sampled_from(["ok", "lost", "batch", "child", "engine"]), min_size=1, max_size=40))
def test_every_child_gets_exactly_one_result_whatever_fails(n, batch, slots, fates):
    """Lost workers, engines failing under tasks, failed batches and failing children in any order: each
    child ends once, and the loop ends (an engine that fails every time is a child's failure in the end)."""
    ex = FakeExecutor()
    d = make(ex, max_in_flight=slots, batch_size=batch)
    for i in range(n):
        d.queue(Evaluate(i, {"a": bytes([i])}))
    seen: Counter[int] = Counter()
    step = 0
    while d.pending or d.in_flight:
        d.fill(no_proposals)
        for h in ex.open():
            jobs = ex.sent[h][1]
            fate = fates[step % len(fates)]
            step += 1
            if fate == "lost":
                ex.finished[h] = TaskLost("gone")
            elif fate == "engine":
                ex.finished[h] = NodeUnusable("no Docker engine answers")
            elif fate == "batch":
                ex.finished[h] = [ChildResult(j.agent_id, fail_stage="sandbox", fail_reason="oom",
                                              batch_failure=len(jobs) > 1) for j in jobs]
            elif fate == "child":
                ex.finished[h] = [ChildResult(j.agent_id, fail_stage="evaluation", fail_reason="x") for j in jobs]
            else:
                ex.succeed(h)
        for _, results in collect(d):
            seen.update(r.agent_id for r in results)
        assert step < 10_000
    assert seen == Counter(range(n))


def test_an_engine_failing_under_a_task_sends_its_children_again_first_until_it_happened_too_often():
    ex = FakeExecutor()
    d = make(ex, max_in_flight=1, batch_size=2)
    for i in range(3):
        d.queue(Evaluate(i, {"a": bytes([i])}))
    for _ in range(1, ENGINE_LOSSES_PER_CHILD):
        d.fill(no_proposals)
        (h,) = ex.open()
        assert [j.agent_id for j in ex.sent[h][1]] == [0, 1]  # the same batch, first in the queue again
        ex.finished[h] = NodeUnusable("no Docker engine answers")
        assert collect(d) == []  # nothing failed
        assert [j.agent_id for j in d.pending] == [0, 1, 2] and d.nodes_lost == 0
    d.fill(no_proposals)
    (h,) = ex.open()
    ex.finished[h] = NodeUnusable("no Docker engine answers")
    assert collect(d) == []  # its share used up: the batch is isolated, as for a lost worker
    d.fill(no_proposals)
    (single,) = ex.open()
    assert [j.agent_id for j in ex.sent[single][1]] == [0]
    ex.finished[single] = NodeUnusable("no Docker engine answers")
    (delivered,) = collect(d)
    (failed,) = delivered[1]
    assert failed.agent_id == 0 and failed.fail_stage == "sandbox"
    assert failed.fail_reason.startswith("worker failed: the Docker engine failed under it")


def test_a_failed_mutation_is_delivered_before_the_next_child_is_proposed():
    """The bandit and the parent's last error see a child's failure before its sibling is made."""
    ex = FakeExecutor()
    events = []
    d = make(ex, deliver=lambda mutation, results: events.append(("delivered", results[0].agent_id)),
             max_in_flight=1, batch_size=1)
    d.queue(Mutate(0, 0, "llm_diff", model="m", unprepared="cannot build the prompt"))

    def propose(n):
        events.append(("proposed", n))
        return [Breed(1, 0, "gaussian")]
    d.fill(propose)
    assert events == [("delivered", 0), ("proposed", 1)]


def test_what_a_result_queues_goes_behind_a_batch_isolated_in_the_same_collect():
    """As results are recorded the moment they are taken, and deadlines are checked after them,
    the children of a late batch go out before the evaluation a mutation result queued."""
    ex = FakeExecutor()
    holder = {}

    def deliver(mutation, results):
        for r in results:  # a stored code child goes to the front of the queue, as the recorder does
            holder["d"].queue(Evaluate(r.agent_id, r.files), front=True)
    d = make(ex, deliver=deliver, max_in_flight=2, batch_size=2, task_timeout=0.01)
    holder["d"] = d
    d.queue(Evaluate(10, {"a": b"0"}))
    d.queue(Evaluate(11, {"a": b"1"}))
    d.queue(Mutate(12, 0, "ast"))
    d.fill(no_proposals)
    batch, mutation = ex.open()
    assert ex.sent[mutation][0] == "mutate"
    ex.finished[mutation] = [ChildResult(12, files={"a": b"2"})]
    time.sleep(0.05)  # the batch is past its deadline
    d.collect(0)
    assert [j.agent_id for j in d.pending] == [10, 11, 12]
