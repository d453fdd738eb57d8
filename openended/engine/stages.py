"""Staged (cascade) evaluation: a task's ``[[stages]]``, run one evaluation job per stage.

Each stage of a child is its own evaluation job, sent by the driver. When a stage's result comes back
(:meth:`Stager.evaluations`, before the recorder sees it) the driver decides:

- the result failed, was invalid, or came from the last stage: it is the child's terminal result and
  goes to the :class:`~openended.engine.recorder.Recorder` as any result does (in the reproducible mode
  through its in-order application); ``metrics.stage_reached`` names the stage;
- the child passed the stage's rule (``min_fitness``, ``beats = "parent" | "archive_median"``; a root
  always passes: the archive needs somewhere to start): the stage's ``evaluations`` row is committed at
  once (with the genome, a parameter child's first step to ``mutated``), and the next stage's job is
  queued at the front. A kill between stages resumes at the
  first stage that has no row: finished stages are never run again;
- it failed the rule: it stops there, its fitness the stage's, and its result goes to the recorder as
  terminal (its row written with its outcome, in turn). By default (``partial_is_final = false``) it is
  marked ``partial``: stored ``rejected`` and kept out of the archive; with ``partial_is_final = true``
  its result goes to the archive as final.

A stage with a ``scorer`` folder is still one evaluation job: the worker runs the acting evaluation,
then the scorer on its outputs (:func:`openended.engine.worker.run_jobs`); the stager sees one result.

Intermediate stages are not terminal, so they never go through the in-order application; what they
decide depends only on the child's own result and on references fixed before it ran: the parent's
fitness (final once the parent is stored), and the archive's median fitness when the child was proposed
(noted then, and stored in the run's state with the proposal, so a resume sees the same one).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from archive_db import ArchiveDB, Outcome
from openended.engine.jobs import ChildResult, Evaluate, Job
from openended.engine.recorder import Child, evaluation_row, usage_of
from openended.results import InvalidResult, check_files, check_result

if TYPE_CHECKING:
    from openended.config import CampaignConfig
    from openended.engine.recorder import Recorder
    from openended.qd import Archive
    from openended.sandbox.spec import SandboxSpec
    from openended.tasks import Task
    from openended.tasks.spec import StageSpec


class Campaign(Protocol):
    """What the stager reads of (and the one setting it raises on) the campaign it serves."""

    task: Task
    config: CampaignConfig
    sandbox: SandboxSpec
    recorder: Recorder
    db: ArchiveDB
    archive: Archive
    state: dict
    _task_timeout: float

    def _requeue(self, job: Job) -> None: ...

REFS = "stage_refs"  # the run state's key: child id -> archive median when it was proposed


def attach(campaign: Campaign) -> Stager | None:
    """The campaign's stager when its task declares ``[[stages]]`` (after the recorder is built)."""
    return Stager(campaign) if campaign.task.spec.stages else None


class _Noting(dict):
    """The recorder's children: a child entered here is proposed, and the archive's median is noted."""

    def __init__(self, items: dict, note: Callable[[int], None]):
        super().__init__(items)
        self._note = note

    def __setitem__(self, key: int, value: Child) -> None:
        self._note(key)
        super().__setitem__(key, value)


class Stager:
    """Decides after each stage whether a child goes on; see the module docstring."""

    def __init__(self, campaign: Campaign):
        self.stages: list[StageSpec] = list(campaign.task.spec.stages)
        self.final_partial = campaign.task.spec.partial_is_final
        self.recorder = campaign.recorder
        self.db = campaign.db
        self.archive = campaign.archive
        self._requeue: Callable[[Job], None] = campaign._requeue
        # a scorer stage is two evaluations (acting, then scoring), each under the stage's time limit
        longest = max((s.limits.timeout_s or campaign.sandbox.limits.timeout_s) * (2 if s.scorer else 1)
                      for s in self.stages)
        if campaign.config.task_timeout_seconds is None:  # the backstop covers the longest stage
            slack = 0.0 if campaign.sandbox.kind == "inprocess" else 30.0
            campaign._task_timeout = max(campaign._task_timeout, longest * 1.5 + slack)
        self.next: dict[int, int] = {}  # child -> the stage it runs next (absent: the first)
        self._usage: dict[int, tuple[int, int, float]] = {}  # spent in stages whose row could not carry it
        names = [s.name for s in self.stages]
        for row in self.db.agents_by_status("mutated"):  # resume: the stages each child already passed
            done = [e["stage"] for e in self.db.evaluations(row["id"]) if e["fitness"] is not None]
            passed = 0
            while passed < len(names) - 1 and passed < len(done) and done[passed] == names[passed]:
                passed += 1
            if passed:
                self.next[row["id"]] = passed
        self.refs: dict[str, float | None] | None = None
        if any(s.beats == "archive_median" for s in self.stages):
            self.refs = campaign.state.setdefault(REFS, {})
            for agent_id in self.recorder.children:  # resumed children were noted when proposed
                self._note(agent_id)
            self.recorder.children = _Noting(self.recorder.children, self._note)

    def _note(self, agent_id: int) -> None:
        if self.refs is not None and str(agent_id) not in self.refs:
            fitness = [float(f) for f in self.archive.members()["fitness"]] if self.archive.size else []
            self.refs[str(agent_id)] = statistics.median(fitness) if fitness else None
            children = self.recorder.children
            if len(self.refs) > 2 * len(children) + 64:  # drop children already applied (stored as finished)
                keep = {str(i) for i in children} | {str(agent_id)}
                for key in [k for k in self.refs if k not in keep]:
                    del self.refs[key]

    def executor(self, inner: Any) -> StagedExecutor:
        return StagedExecutor(inner, self)

    # ------------------------------------------------------------------ results
    def evaluations(self, results: list[ChildResult]) -> None:
        """Results of evaluation jobs: the passes go on to their next stage; the rest to the recorder."""
        terminal: list[ChildResult] = []
        for r in results:
            k = min(self.next.get(r.agent_id, 0), len(self.stages) - 1)
            stage = self.stages[k]
            spent = self._usage.pop(r.agent_id, None)
            if spent is not None:
                r.tokens_in, r.tokens_out, r.cost = r.tokens_in + spent[0], r.tokens_out + spent[1], r.cost + spent[2]
            if isinstance(r.result, dict) and isinstance(r.result.get("metrics", {}), dict):
                r.result = {**r.result, "metrics": {**r.result.get("metrics", {}), "stage_reached": stage.name}}
            last = k == len(self.stages) - 1
            checked = None
            if not r.failed and not last:
                try:
                    checked = check_result(r.result, self.recorder.n_descriptors, self.recorder.bounds)
                except InvalidResult:
                    checked = None  # the recorder fails it with the reason
            if checked is None:
                terminal.append(r)
                self._done(r.agent_id)
            elif self._passes(stage, r.agent_id, checked.fitness):
                self._advance(r, k, checked.fitness)
            else:  # stopped here; by default kept out of the archive (in turn, with its row, by the recorder)
                r.partial = not self.final_partial
                terminal.append(r)
                self._done(r.agent_id)
        if terminal:
            self.recorder.evaluations(terminal)

    def _passes(self, stage: StageSpec, agent_id: int, fitness: float) -> bool:
        child = self.recorder.children.get(agent_id)
        if child is None or child.parent_id is None:
            return True  # a root runs every stage: the archive needs somewhere to start
        if stage.min_fitness is not None and fitness < stage.min_fitness:
            return False
        reference: float | None = None
        if stage.beats == "parent":
            reference = self.db.agent(child.parent_id)["fitness"]
        elif stage.beats == "archive_median" and self.refs is not None:
            reference = self.refs.get(str(agent_id))
        return reference is None or fitness > reference

    def _advance(self, r: ChildResult, k: int, fitness: float) -> None:
        """Stage ``k`` passed: its row now (the genome with it, for a child not yet stored), the next stage out."""
        try:
            files = check_files(r.files or {})
        except InvalidResult:
            self.recorder.evaluations([r])  # the recorder fails it with the reason
            self._done(r.agent_id)
            return
        outcomes: list[Outcome] = []
        if self.db.agent(r.agent_id)["status"] == "proposed":  # a parameter child: its genome is stored now
            outcomes.append(Outcome(r.agent_id, "mutated", files=files, **usage_of(r)))
            self.recorder.counters.spend(r)
        else:  # a stored row cannot take usage before its end: it is added to the terminal result
            self._usage[r.agent_id] = (r.tokens_in, r.tokens_out, r.cost)
        evaluations = [evaluation_row(r.agent_id, r.evaluation, fitness)] if r.evaluation is not None else []
        self.recorder.commit(outcomes, evaluations=evaluations)
        self.next[r.agent_id] = k + 1
        self._requeue(Evaluate(r.agent_id, files, stage=k + 1))

    def _done(self, agent_id: int) -> None:
        self.next.pop(agent_id, None)
        self._usage.pop(agent_id, None)


class StagedExecutor:
    """An executor that stamps each evaluation job with the stage its child runs next."""

    def __init__(self, inner: Any, stager: Stager):
        self.inner = inner
        self.stager = stager

    def evaluate(self, jobs: list[Any]) -> Hashable:
        return self.inner.evaluate([dataclasses.replace(j, stage=self.stager.next.get(j.agent_id, 0)) for j in jobs])

    def mutate(self, job: Any, model: Any) -> Hashable:
        return self.inner.mutate(job, model)

    def ready(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        return self.inner.ready(handles, timeout)

    def result(self, handle: Hashable) -> list[ChildResult]:
        return self.inner.result(handle)

    def cancel(self, handle: Hashable) -> None:
        self.inner.cancel(handle)
