"""Scheduling: the queue of jobs waiting to go out, the tasks in flight, their deadlines.

The :class:`Dispatcher` decides what goes out and when: batches of evaluations, code mutations
one per task, children of a crashed batch re-run one at a time (isolation), mutations held back
while their model is busy. It hands work to an :class:`Executor`; :class:`RayExecutor` is the
real one (this is the only module that imports Ray), a test can hand it a fake.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import ray

from openended.cluster.check import PROBE_SECONDS
from openended.cluster.usable import Note, UsableNodes
from openended.engine.jobs import (
    NO_RESULT,
    WORKER_LOST,
    ChildResult,
    EngineLost,
    EvalJob,
    Evaluate,
    Job,
    Mutate,
    Tune,
)
from openended.engine.node_files import ShippedPath, ship, ship_paths
from openended.llm import ModelSpec
from openended.names import LOCAL_MODEL
from openended.sandbox.engine import image_numpy
from openended.sandbox.spec import SandboxSpec
from openended.tasks import TaskRef

log = logging.getLogger(__name__)

# Models that generate for one request at a time (the embedded llama.cpp server): queued calls
# would only run down their time limits, so their mutations wait in the queue instead.
SERIAL_MODELS = frozenset({LOCAL_MODEL})
# Time allowed for an LLM-free mutation task, and the slack over a model's own time budget.
MUTATION_SECONDS = 60.0
MODEL_SLACK_SECONDS = 30.0
# How long Ray's node list may go on listing a dead node as alive (its health checks: 5 misses, 3 s apart).
NODE_DEATH_SECONDS = 40.0
NODE_ID = re.compile(r"node ID: ([0-9a-f]{56})")
# How many times one child goes out again because a node's Docker engine failed under it; after that its
# task counts as lost (an engine that fails whenever this child runs is this child's failure).
ENGINE_LOSSES_PER_CHILD = 3


class TaskLost(Exception):
    """A task's worker died or the task could not run; the message says why."""


class NodeLost(TaskLost):
    """The node a task ran on died (a preempted machine, a killed raylet): nothing the task's children did."""


class NodeUnusable(NodeLost):
    """The Docker engine of the node a task ran on stopped answering: the node gets no more evaluations until a
    probe finds it usable again."""


class Executor(Protocol):
    """Runs jobs somewhere and hands back their results."""

    def evaluate(self, jobs: list[EvalJob]) -> Hashable: ...
    def mutate(self, job: Mutate, model: ModelSpec | None) -> Hashable: ...
    def ready(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]: ...
    def result(self, handle: Hashable) -> list[ChildResult]: ...  # raises TaskLost
    def cancel(self, handle: Hashable) -> None: ...


@dataclass(slots=True)
class Flight:
    """One task out: its jobs and the backstop deadline after which it counts as lost."""

    jobs: list[Job]
    deadline: float
    mutation: bool


Deliver = Callable[[bool, list[ChildResult]], None]
"""Receives results as they come: (from a mutation task?, one result per child)."""


class Dispatcher:
    """Pending jobs, tasks in flight and their deadlines; hands every child's :class:`ChildResult` to
    ``deliver`` the moment it is known, so whatever ``deliver`` queues goes out before the next batch."""

    def __init__(self, executor: Executor, deliver: Deliver, *, max_in_flight: int, batch_size: int, cpus: int,
                 task_timeout: float, models: dict[str, ModelSpec]):
        self.executor = executor
        self.deliver = deliver
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.cpus = max(1, cpus)
        self.task_timeout = task_timeout
        self.models = models
        self.pending: deque[Job] = deque()
        self._flights: dict[Hashable, Flight] = {}
        self._isolate: set[int] = set()  # children of a crashed batch, re-run one per task
        self.nodes_lost = 0  # tasks whose node died under them (their children went out again)
        self._engine_losses: dict[int, int] = {}  # child -> tasks of it whose node's engine failed

    # ------------------------------------------------------------- state
    @property
    def in_flight(self) -> int:
        """Tasks out."""
        return len(self._flights)

    @property
    def children_in_flight(self) -> int:
        return sum(len(j.report) if isinstance(j, Tune) else 1 for f in self._flights.values() for j in f.jobs)

    def queue(self, job: Job, *, front: bool = False) -> None:
        (self.pending.appendleft if front else self.pending.append)(job)

    # ---------------------------------------------------------- dispatch
    def fill(self, propose: Callable[[int], list[Job]], *, evaluations_only: bool = False) -> None:
        """Send tasks until ``max_in_flight`` are out or nothing can go yet; ``propose(n)`` makes up to n
        new children when the queue runs dry. ``evaluations_only``: a spending budget is used up, so
        only children already mutated (and paid for) go out: no proposals, no more model calls."""

        def waiting(job: Job) -> bool:
            return isinstance(job, Mutate) and (evaluations_only or not self._model_free(job.model))

        while len(self._flights) < self.max_in_flight:
            if self.pending and waiting(self.pending[0]):
                # Let work that can go now pass a mutation waiting for its model.
                ready = next((i for i, job in enumerate(self.pending) if not waiting(job)), None)
                if ready is not None:
                    job = self.pending[ready]
                    del self.pending[ready]
                    self.pending.appendleft(job)
            head = self.pending[0] if self.pending else None
            if isinstance(head, Mutate) and not waiting(head):
                self._send_mutation(self.pending.popleft())  # type: ignore[arg-type]
                continue
            if head is not None and (head.agent_id in self._isolate or isinstance(head, Tune)):
                self.pending.popleft()
                self._isolate.discard(head.agent_id)
                self._send([head])  # type: ignore[list-item]
                continue
            jobs: list[EvalJob] = []
            while (self.pending and len(jobs) < self.batch_size and self.pending[0].agent_id not in self._isolate
                   and not isinstance(self.pending[0], (Mutate, Tune))):
                jobs.append(self.pending.popleft())  # type: ignore[arg-type]
            # New children when nothing is queued, or only a few mutations wait for a busy model.
            if not evaluations_only and (not self.pending or (
                    all(map(waiting, self.pending)) and len(self.pending) < self.max_in_flight)):
                for job in propose(self.batch_size - len(jobs)):
                    # a block larger than the batch: the rest goes out in the next tasks
                    if isinstance(job, (Mutate, Tune)) or len(jobs) >= self.batch_size:
                        self.pending.append(job)
                    else:
                        jobs.append(job)
            if not jobs:
                if self.pending and not all(map(waiting, self.pending)):
                    continue
                return
            self._send(jobs)

    def _model_free(self, model: str | None) -> bool:
        if model not in SERIAL_MODELS:
            return True
        return not any(f.mutation and getattr(f.jobs[0], "model", None) == model for f in self._flights.values())

    def _send(self, jobs: list[EvalJob]) -> None:
        handle = self.executor.evaluate(jobs)
        # The deadline is a backstop measured from dispatch: a task queued behind others on a
        # full cluster gets a timeout for each round of tasks ahead of it.
        rounds_ahead = len(self._flights) // self.cpus
        # a tune job evaluates its children in turn: a timeout for each
        own = sum(job.count if isinstance(job, Tune) else 0 for job in jobs) or 1
        deadline = time.monotonic() + self.task_timeout * (own + rounds_ahead)
        self._flights[handle] = Flight(list(jobs), deadline, False)

    def _send_mutation(self, job: Mutate) -> None:
        if job.unprepared is not None:
            self.deliver(True, [_mutation_failed(job, job.unprepared)])
            return
        spec = None if job.model is None else self.models.get(job.model)
        if job.model is not None and spec is None:
            reason = f"model {job.model!r} is not configured in this session"
            self.deliver(True, [_mutation_failed(job, reason)])
            return
        handle = self.executor.mutate(job, spec)
        limit = (MUTATION_SECONDS if spec is None else spec.max_total_s + MODEL_SLACK_SECONDS) + job.seconds
        rounds_ahead = len(self._flights) // max(1, self.max_in_flight)
        self._flights[handle] = Flight([job], time.monotonic() + limit * (1 + rounds_ahead), True)

    # ----------------------------------------------------------- collect
    def collect(self, timeout: float) -> None:
        """Deliver the results of the tasks that finished within ``timeout``, in the order they are
        taken. A crashed or late batch is queued again one child per task; a crashed or late lone
        child fails."""
        if not self._flights:
            return
        for handle in self.executor.ready(list(self._flights), timeout):
            flight = self._flights.pop(handle)
            try:
                results = self.executor.result(handle)
            except NodeLost as exc:
                # Not the children's doing: they go out again, first, with their recorded seeds.
                if isinstance(exc, NodeUnusable):
                    if self._engine_lost_too_often(flight):
                        self._lost(flight, "sandbox", f"{WORKER_LOST}: the Docker engine failed under it "
                                                      f"{ENGINE_LOSSES_PER_CHILD} times: {exc}")
                        continue
                    log.warning("a node's Docker engine failed under a task of %d children; re-dispatching them: %s",
                                len(flight.jobs), exc)
                else:
                    self.nodes_lost += 1
                    log.warning("a node died under a task of %d children; re-dispatching them: %s",
                                len(flight.jobs), exc)
                self.pending.extendleft(reversed(flight.jobs))
                continue
            except TaskLost as exc:
                self._lost(flight, "sandbox", f"{WORKER_LOST}: {exc}")
                continue
            if not flight.mutation and len(flight.jobs) > 1 and any(r.batch_failure for r in results):
                self._lost(flight, "sandbox", "batch failed")
                continue
            self.deliver(flight.mutation, results)
        now = time.monotonic()
        for handle, flight in list(self._flights.items()):
            if now > flight.deadline:
                self.executor.cancel(handle)
                del self._flights[handle]
                self._lost(flight, "timeout", f"{NO_RESULT} {self.task_timeout:g}s")

    def _engine_lost_too_often(self, flight: Flight) -> bool:
        """Count an engine failure against each child of ``flight``; whether one has had its share."""
        losses = self._engine_losses
        for job in flight.jobs:
            losses[job.agent_id] = losses.get(job.agent_id, 0) + 1
        return any(losses[job.agent_id] >= ENGINE_LOSSES_PER_CHILD for job in flight.jobs)

    def _lost(self, flight: Flight, stage: str, reason: str) -> None:
        if len(flight.jobs) > 1:
            # Singletons go to the front of the queue, in their order.
            self._isolate.update(j.agent_id for j in flight.jobs)
            self.pending.extendleft(reversed(flight.jobs))
            return
        job = flight.jobs[0]
        if isinstance(job, Mutate):
            self.deliver(True, [_mutation_failed(job, f"{stage}: {reason}")])
            return
        if isinstance(job, Tune):  # one task, several children: each of them fails
            self.deliver(False, job.failed(stage, reason))
            return
        files = job.files if isinstance(job, Evaluate) else None
        self.deliver(False, [ChildResult(job.agent_id, files=files, fail_stage=stage, fail_reason=reason)])

    def cancel_all(self) -> None:
        """Cancel every task in flight; their jobs go back to the queue (they run again on resume)."""
        for handle, flight in list(self._flights.items()):
            self.executor.cancel(handle)
            self.pending.extend(flight.jobs)
        self._flights.clear()


def _mutation_failed(job: Mutate, reason: str) -> ChildResult:
    return ChildResult(job.agent_id, fail_stage="mutation", model=job.model, fail_reason=reason)


class RayExecutor:
    """Runs jobs as Ray tasks on the cluster this process has joined. With the docker sandbox, only on the
    nodes whose Docker engine and sandbox image a probe found usable (:class:`UsableNodes`); ``note``
    hears of each node kept out, with why."""

    def __init__(self, task: TaskRef, sandbox: SandboxSpec, note: Note | None = None):
        from openended.engine.worker import mutate_job, run_jobs

        # the task folder and the runner travel through Ray's object store: workers share no files with us
        self.task = ship(task)
        self._shipped: dict[str, ShippedPath] = {}  # the driver's folders a job names (templates_dir)
        self.sandbox = sandbox
        self._evaluate = ray.remote(num_cpus=1, max_retries=0)(run_jobs)
        # A model call waits on the network or the local server, not on this node's CPU.
        self._mutate = ray.remote(num_cpus=0, max_retries=0)(mutate_job)
        # The process and in-process sandboxes need nothing of a node but Ray: every node is usable. The
        # docker sandbox: nodes whose image carries this machine's image's numpy (the campaign checked it here).
        self.nodes: UsableNodes | None = None
        if sandbox.kind == "docker":
            self.nodes = UsableNodes(sandbox.image, note, numpy=image_numpy(sandbox.image))
        self._allowed: dict[Hashable, frozenset[str]] = {}  # a task out -> the nodes it may run on
        self._stranded: set[Hashable] = set()

    def evaluate(self, jobs: list[EvalJob]) -> Hashable:
        return self._placed(self._evaluate, self.task, jobs, self.sandbox, cpu=True)

    def mutate(self, job: Mutate, model: ModelSpec | None) -> Hashable:
        return self._placed(self._mutate, self.task, ship_paths(job, self._shipped), model, self.sandbox, cpu=False)

    def _placed(self, fn: Any, *args: Any, cpu: bool) -> Hashable:
        """``fn.remote(*args)``, kept to the usable nodes (the first call probes them all, and waits); ``cpu``:
        the task takes a CPU, so only the usable nodes with one can run it."""
        if self.nodes is None:
            return fn.remote(*args)
        if not self.nodes.started:
            self.nodes.start()
        if not self.nodes.can_evaluate:  # every usable node died: a joining one may be usable
            self.nodes.wait_usable(PROBE_SECONDS)
        handle = fn.options(label_selector=self.nodes.selector()).remote(*args)
        # what it can run on: with a CPU to take, not a usable head of none (a task left with nothing but
        # that would wait until its deadline)
        self._allowed[handle] = self.nodes.evaluators if cpu else frozenset(self.nodes.usable)
        return handle

    def ready(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        refs = list(handles)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # take every other one already done too, without waiting
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if self.nodes is not None:
            self.nodes.refresh()
            # A task waiting for nodes that all left since it went out would wait forever: it comes back
            # as lost (no child of it ran), and its jobs go out again to the nodes there are now.
            done = set(ready)
            for ref in refs:
                allowed = self._allowed.get(ref)
                if ref not in done and allowed is not None and not allowed & self.nodes.alive:
                    self._stranded.add(ref)
                    ready.append(ref)
        return list(ready)

    def result(self, handle: Hashable) -> list[ChildResult]:
        if handle in self._stranded:
            self._allowed.pop(handle, None)
            self._stranded.discard(handle)
            ray.cancel(handle, force=True)
            raise NodeLost("every node it could run on left the cluster before it started")
        allowed = self._allowed.pop(handle, None)
        try:
            results = ray.get(cast("ray.ObjectRef[Any]", handle))
        except ray.exceptions.NodeDiedError as exc:
            dead = NODE_ID.search(str(exc))
            if dead and self.nodes is not None:  # Ray knows it at once; its node list only 15-30 s later
                self.nodes.died(dead.group(1))
            raise NodeLost(str(exc).strip().splitlines()[0][:300]) from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if not isinstance(cause, EngineLost):
                text = str(exc).strip().splitlines()
                raise TaskLost((text[0] if text else type(exc).__name__)[:300]) from None
            if self.nodes is None or cause.node_id is None:  # no node to keep work off: sent again, it would
                raise TaskLost(f"the Docker engine failed: {cause.problem}") from None  # fail the same way
            self.nodes.engine_lost(cause.node_id, cause.problem)
            raise NodeUnusable(cause.problem) from None
        except ray.exceptions.TaskUnschedulableError as exc:
            # Ray gives up on a queued task whose selector names only nodes that are gone: it never ran.
            if self.nodes is not None and allowed is not None and self._left(allowed):
                raise NodeLost("every node it could run on left the cluster before it started") from None
            raise TaskLost(str(exc).strip().splitlines()[0][:300]) from None
        except Exception as exc:  # the worker process died or the task could not run
            text = str(exc).strip().splitlines()
            raise TaskLost((text[0] if text else type(exc).__name__)[:300]) from None
        return results if isinstance(results, list) else [results]

    def _left(self, allowed: frozenset[str]) -> bool:
        """Whether a node of ``allowed`` left the cluster (Ray's node list may take NODE_DEATH_SECONDS to say so)."""
        assert self.nodes is not None
        deadline = time.monotonic() + NODE_DEATH_SECONDS
        while allowed <= self.nodes.alive and time.monotonic() < deadline:
            time.sleep(0.5)
            self.nodes.refresh(force=True)
        return not allowed <= self.nodes.alive

    def cancel(self, handle: Hashable) -> None:
        self._allowed.pop(handle, None)
        self._stranded.discard(handle)
        ray.cancel(handle, force=True)

    @staticmethod
    def cluster_cpus() -> int:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ensure_ray(address: str | None) -> bool:
    """Start a private local Ray, or join ``address`` (else ``RAY_ADDRESS``); returns whether this call
    started it."""
    if ray.is_initialized():
        return False
    # Ray's own default (no address) joins the cluster the last `ray start` on this machine recorded,
    # even one that has since died: a campaign would run on someone else's cluster, or hang and fail.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    # Workers' own log lines would garble the progress display; every failure is in the database.
    ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, configure_logging=True,
             log_to_driver=False)
    return True


def shutdown_ray() -> None:
    ray.shutdown()
