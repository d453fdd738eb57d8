"""From a worker's result to the store: check it, place it in the archive, commit it with the driver state.

Every write goes through :meth:`Recorder.commit`: the outcomes, the evaluation records, the elite
changes and the driver's state (RNG, archive state) in one transaction, so a kill at any moment
leaves the store at a state the campaign can resume from.

Nothing a child sends reaches the archive or the store unchecked (:mod:`openended.results`): a
result outside the contract or the task's bounds fails the child with stage ``invalid``. As a last
line, if committing a batch raises anyway, the batch is committed child by child and a child whose
step still cannot be stored fails with stage ``internal`` and the error: the campaign goes on.

In the reproducible mode (``ordered``) a child's terminal outcome is applied in child-id order
through :class:`~openended.engine.ordering.InOrder`; a code child's genome is still stored the
moment it is made (a paid mutation is never lost).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from archive_db import ArchiveDB, Evaluation, Outcome, Recipe
from openended.config import MutationConfig
from openended.engine.dedupe import Dedupe, Verdict, decide
from openended.engine.jobs import ChildResult, Evaluate, Job
from openended.engine.nodes import count_nodes
from openended.engine.ordering import InOrder
from openended.mutation.gaussian import VERSION as GAUSSIAN_VERSION
from openended.mutation.gaussian import recipe_params
from openended.mutation.self_improve import Diagnosis
from openended.portfolio import Arm, Portfolio
from openended.qd import Archive
from openended.results import (
    MAX_TAIL_CHARS,
    Bounds,
    InvalidResult,
    check_files,
    check_result,
    clean_text,
)
from openended.sandbox.spec import EvaluationRecord
from openended.selection import LineageCounts
from openended.tasks import Task

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 1_000_000  # outcomes between refreshes of the store's lineage snapshot (archive_db.lineage)


@dataclass(frozen=True, slots=True)
class InOrderStart:
    """Where the reproducible mode's in-order application resumes."""

    frontier: int  # every child below it is finished
    finished: set[int]  # children at or above it already finished (their outcome stored)


@dataclass(slots=True)
class Child:
    """What the driver remembers of a child until its outcome is recorded."""

    parent_id: int | None
    arm: Arm | None = None  # the portfolio arm (operator x model) that made it


@dataclass
class Counters:
    """Running totals of this campaign, restored from the store on resume."""

    done: int = 0
    failed: int = 0
    best_fitness: float | None = None
    tokens: int = 0
    cost: float = 0.0
    started_at: float = field(default_factory=time.monotonic)

    def spend(self, r: ChildResult) -> None:
        self.tokens += r.tokens_in + r.tokens_out
        self.cost += r.cost


class Recorder:
    """Turns results into outcomes and commits them; the only place the loop writes children's steps."""

    def __init__(self, db: ArchiveDB, archive: Archive, *, lineage: LineageCounts, portfolio: Portfolio,
                 counters: Counters, n_descriptors: int, dedupe: Dedupe | None,
                 driver_state: Callable[[], dict], requeue: Callable[[Job], None],
                 remember: Callable[[int, dict[str, bytes]], None], fitness_upper: float | None = None,
                 ordered: InOrderStart | None = None, per_node: dict[str, int] | None = None):
        self.db = db
        self.archive = archive
        self.lineage = lineage
        self.portfolio = portfolio
        self.counters = counters
        self.n_descriptors = n_descriptors
        # the task's bounds: fitness from the archive's floor (the task's [fitness] lower) up to
        # ``fitness_upper``; descriptors within the archive's space
        space = archive.space
        self.bounds = Bounds(fitness_lower=archive.fitness_offset, fitness_upper=fitness_upper,
                             descriptor_lower=tuple(float(x) for x in space.lower),
                             descriptor_upper=tuple(float(x) for x in space.upper))
        self.dedupe = dedupe  # None: parameter genomes, never de-duplicated
        self._driver_state = driver_state
        self._requeue = requeue
        self._remember = remember
        # children evaluated per Ray node: part of the driver state, so counted in the transaction that stores them
        self.per_node = {} if per_node is None else per_node
        self.children: dict[int, Child] = {}  # children not yet finished
        self._since_snapshot = 0  # outcomes committed since the lineage snapshot was last brought up to date
        # operator -> how its children can be regenerated from their parent (parameter tasks: the store may
        # keep them compact, archive_db.recipes); None: every genome stored in full
        self.recipe_of: Callable[[str], Recipe | None] | None = None
        self.diagnoses: dict[int, Diagnosis] = {}  # self_improve: stored with the child's next step
        self.last_errors: dict[int, str] = db.last_mutation_errors() if dedupe is not None else {}
        # the reproducible mode: terminal outcomes wait for their turn (None: applied as they come)
        self.in_order: InOrder[ChildResult | Outcome] | None = None
        if ordered is not None:
            self.in_order = InOrder(ordered.frontier, self._apply_in_order, done=ordered.finished)

    # ------------------------------------------------------------- writes
    def commit(self, outcomes: Iterable[Outcome], *, evaluations: Iterable[Evaluation] = (),
               elites: dict[int, int] | None = None) -> None:
        """Outcomes, evaluation records, elite changes and the driver state, in one transaction."""
        outcomes = list(outcomes)
        with self.db.transaction():
            self.db.record(outcomes)
            self.db.add_evaluations(list(evaluations))
            if elites:
                self.db.set_elites(elites)
            diagnosed = [o.id for o in outcomes if o.id in self.diagnoses]
            for agent_id in diagnosed:
                self.db.add_transcript(agent_id, **self.diagnoses[agent_id].transcript())
            self.db.update_run(state=self._driver_state())
        for agent_id in diagnosed:
            del self.diagnoses[agent_id]
        self._since_snapshot += len(outcomes)
        if self._since_snapshot >= SNAPSHOT_EVERY:
            self._snapshot_lineage()

    def _snapshot_lineage(self) -> None:
        """Bring the store's lineage snapshot up to date (``ArchiveDB.lineage_counts`` rewrites it when it lags),
        so that a resume after a long run, or a kill, reads the rows since the last one rather than every agent.
        A second or two at 10^7 agents, once per :data:`SNAPSHOT_EVERY` outcomes; a failure only costs the next
        resume time."""
        self._since_snapshot = 0
        try:
            self.db.lineage_counts()
        except Exception as exc:
            log.warning("could not refresh the lineage snapshot (%s); a resume will count the rows since the last",
                        describe_error(exc))

    def _commit_safely(self, outcomes: list[Outcome], *, evaluations: Sequence[Evaluation] = (),
                       elites: dict[int, int] | None = None) -> list[Outcome]:
        """:meth:`commit`; if that raises, each child on its own, and a child whose step cannot be
        stored is failed with stage ``internal`` and the error. Returns the outcomes as stored."""
        try:
            self.commit(outcomes, evaluations=evaluations, elites=elites)
            return outcomes
        except Exception as exc:  # the last line: a child's data must not stop the campaign
            log.warning("recording a batch of %d failed (%s); recording child by child", len(outcomes),
                        describe_error(exc))
        stored: list[Outcome] = []
        for o in outcomes:
            own = [e for e in evaluations if e.agent_id == o.id]
            cells = {cell: aid for cell, aid in (elites or {}).items() if aid == o.id}
            try:
                self.commit([o], evaluations=own, elites=cells)
                stored.append(o)
                continue
            except Exception as exc:
                reason = f"recording this child failed: {describe_error(exc)}"
            self.diagnoses.pop(o.id, None)  # in case it was what could not be stored
            failed = Outcome(o.id, "failed", fail_stage="internal", fail_reason=clean_text(reason, MAX_TAIL_CHARS),
                             tokens_in=o.tokens_in, tokens_out=o.tokens_out, cost=o.cost,
                             model=clean_text(o.model, 200) if o.model is not None else None)
            try:
                self.commit([failed])
                stored.append(failed)
            except Exception as exc:  # e.g. the row is already terminal: leave it as stored
                log.error("agent %d: could not record its internal failure either: %s", o.id, describe_error(exc))
        return stored

    def mutations(self, results: list[ChildResult]) -> None:
        """Store code children's genomes (or their mutation failures) before any evaluation."""
        for r in results:
            self.counters.spend(r)
            usage = usage_of(r)
            if r.diagnosis is not None:
                self.diagnoses[r.agent_id] = r.diagnosis
            if r.failed or r.files is None:
                self.finish([Outcome(r.agent_id, "failed", fail_stage=r.fail_stage or "mutation",
                                     fail_reason=clean_text(r.fail_reason or "the mutation returned no genome",
                                                            MAX_TAIL_CHARS), **usage)])
                continue
            try:
                files = check_files(r.files)
            except InvalidResult as exc:
                self.finish([Outcome(r.agent_id, "failed", fail_stage="invalid", fail_reason=str(exc), **usage)])
                continue
            mutated = Outcome(r.agent_id, "mutated", files=files, **usage)
            assert self.dedupe is not None, "only code children are mutated apart from their evaluation"
            # ordered: the lowest child with a genome stands for it, whatever order they came in
            first = self.dedupe.first(r.agent_id, files, lowest=self.in_order is not None)
            if first != r.agent_id:
                self.duplicate(r.agent_id, first, stored=[mutated])
                continue
            stored = self._commit_safely([mutated])
            if stored and stored[0] is mutated:
                self._requeue(Evaluate(r.agent_id, files))
            else:  # failed as internal
                self.children.pop(r.agent_id, None)
                self._recorded(stored)
                if self.in_order is not None:
                    self.in_order.hold(r.agent_id, None)
                    self.in_order.release()

    def duplicate(self, agent_id: int, first: int, stored: list[Outcome] | None = None) -> None:
        """A child whose genome agent ``first`` already had: not evaluated again unless the machinery
        failed ``first``. ``stored``: steps of this child not yet committed (its genome)."""
        assert self.dedupe is not None
        decision = decide(agent_id, self._genome_row(first))
        if decision.verdict is Verdict.INHERIT:
            assert decision.outcome is not None
            self.finish([decision.outcome], stored=stored or [])
            return
        if stored:
            self.commit(stored)
        if decision.verdict is Verdict.EVALUATE:
            files = self.db.agent_files(agent_id)
            self.dedupe.claim(agent_id, files)
            self._requeue(Evaluate(agent_id, files))
        else:
            self.dedupe.park(first, agent_id)

    def _genome_row(self, agent_id: int) -> dict:
        """The stored row of the agent whose result stands for ``agent_id``'s genome (past a duplicate)."""
        row = self.db.agent(agent_id)
        return row if row["duplicate_of"] is None else self.db.agent(row["duplicate_of"])

    def finish(self, outcomes: list[Outcome], stored: list[Outcome] | None = None) -> None:
        """Terminal outcomes that change no archive (failures and duplicates), after the ``stored``
        steps that lead to them, in one transaction (ordered: the steps now, the outcomes in turn)."""
        if self.in_order is not None:
            if stored:
                self._commit_safely(stored)
            for o in outcomes:
                self.in_order.hold(o.id, o)
            self.in_order.release()
            return
        self._finish(outcomes, stored)

    def _finish(self, outcomes: list[Outcome], stored: list[Outcome] | None = None) -> None:
        for o in outcomes:
            child = self.children.pop(o.id, None)
            if child is not None and child.arm is not None:
                self.portfolio.update(child.arm, False)
            if child is not None and child.parent_id is not None and o.fail_stage == "mutation":
                # what the parent's next child's prompt is told (mutation errors feed code operators)
                self.last_errors[child.parent_id] = o.fail_reason or "no genome"
        final = {o.id: o for o in self._commit_safely([*(stored or []), *outcomes])}
        self._recorded([final.get(o.id, o) for o in outcomes])

    def evaluations(self, results: list[ChildResult]) -> None:
        """Check each result, place it in the archive, and commit the batch in one transaction
        (ordered: each result in its turn)."""
        if self.in_order is not None:
            for r in results:
                self.in_order.hold(r.agent_id, r)
            self.in_order.release()
            return
        self._evaluations(results)

    def _apply_in_order(self, items: list[ChildResult | Outcome]) -> None:
        """Consecutive children's results and terminal outcomes, applied in child order (consecutive
        evaluations in one transaction)."""
        batch: list[ChildResult] = []
        for item in items:
            first = None
            if isinstance(item, ChildResult):
                first = self._lowest_with_genome(item)
                if first is None:
                    batch.append(item)
                    continue
            if batch:  # stored first: it comes first, and a duplicate is decided on what is stored
                self._evaluations(batch)
                batch = []
            if isinstance(item, Outcome):
                self._finish([item])
                continue
            assert first is not None
            # A code child evaluated before an earlier child made the same genome takes that earlier
            # child's outcome in its turn, as it would have had the earlier one come first.
            outcome = decide(item.agent_id, self._genome_row(first)).outcome
            if outcome is None:  # the earlier one failed for the machinery: this result stands
                self._evaluations([item])
            else:
                self.counters.spend(item)
                count_nodes(self.per_node, [item])  # evaluated, though its outcome is the earlier one's
                self._finish([outcome])
        if batch:
            self._evaluations(batch)

    def _lowest_with_genome(self, r: ChildResult) -> int | None:
        """The earlier child that made ``r``'s genome, if any (ordered mode, code genomes)."""
        if self.dedupe is None or r.files is None:
            return None
        first = self.dedupe.first(r.agent_id, r.files, lowest=True)
        return None if first == r.agent_id else first

    def _evaluations(self, results: list[ChildResult]) -> None:
        outcomes: list[Outcome] = []
        elites: dict[int, int] = {}
        for r in results:
            self.counters.spend(r)
            try:
                outcome = self._outcome(r)
            except Exception as exc:  # the last line: this child fails, the batch goes on
                outcome = Outcome(r.agent_id, "failed", fail_stage="internal", **usage_of(r),
                                  fail_reason=f"checking this child failed: {describe_error(exc)}")
            outcomes.append(outcome)
            if outcome.status == "archived":
                assert outcome.cell is not None and r.files is not None
                elites[outcome.cell] = r.agent_id
                self._remember(r.agent_id, r.files)
        for o in outcomes:
            child = self.children.pop(o.id, None)
            if child is not None:
                if o.archive_event == "new_cell" and child.parent_id is not None:
                    self.lineage.note_discovery(child.parent_id)
                if child.arm is not None:
                    self.portfolio.update(child.arm, o.status == "archived")
            if self.dedupe is not None and o.files is not None:
                self.dedupe.first(o.id, o.files)
        # each evaluation row carries the fitness its result gave, once checked (None when it gave none)
        fitness = {o.id: o.fitness for o in outcomes}
        evaluations = [evaluation_row(r.agent_id, r.evaluation, fitness.get(r.agent_id))
                       for r in results if r.evaluation is not None]
        count_nodes(self.per_node, results)
        self._recorded(self._commit_safely(outcomes, evaluations=evaluations, elites=elites))

    def _outcome(self, r: ChildResult) -> Outcome:
        outcome = self._checked_outcome(r)
        if outcome.files is not None and self.recipe_of is not None:
            child = self.children.get(r.agent_id)
            if child is not None and child.parent_id is not None and child.arm is not None:
                outcome.recipe = self.recipe_of(child.arm.operator)
        return outcome

    def _checked_outcome(self, r: ChildResult) -> Outcome:
        usage = usage_of(r)
        files = r.files
        if files is not None:
            try:
                files = check_files(files)
            except InvalidResult as exc:
                return Outcome(r.agent_id, "failed", fail_stage="invalid", fail_reason=str(exc), **usage)
        if r.failed:
            return Outcome(r.agent_id, "failed", files=files, fail_stage=r.fail_stage, **usage,
                           fail_reason=clean_text(r.fail_reason or "(no reason given)", MAX_TAIL_CHARS))
        try:
            checked = check_result(r.result, self.n_descriptors, self.bounds)
        except InvalidResult as exc:
            return Outcome(r.agent_id, "failed", files=files, fail_stage="invalid", fail_reason=str(exc),
                           eval_seconds=r.eval_seconds, **usage)
        if r.partial:  # stopped by a stage's rule (openended.engine.stages): its partial fitness is not final
            return Outcome(r.agent_id, "rejected", files=files, **usage, fitness=checked.fitness,
                           descriptors=checked.descriptors, metrics=checked.metrics, feedback=checked.feedback,
                           eval_seconds=r.eval_seconds)
        added = self.archive.add(r.agent_id, checked.fitness, checked.descriptors)
        archived = added.status != "not_added"
        best = self.counters.best_fitness
        if best is None or checked.fitness > best:
            self.counters.best_fitness = checked.fitness
        return Outcome(
            r.agent_id, "archived" if archived else "rejected", files=files, **usage,
            fitness=checked.fitness, descriptors=checked.descriptors, metrics=checked.metrics,
            feedback=checked.feedback, eval_seconds=r.eval_seconds, novelty=added.novelty, cell=added.cell,
            archive_event=added.status if archived else None)

    def _recorded(self, outcomes: list[Outcome]) -> None:
        """Count outcomes now in the store, and settle the duplicates that were waiting for them."""
        clades = self.lineage.clades
        for o in outcomes:
            if o.status == "failed":
                self.counters.failed += 1
            else:
                self.counters.done += 1
            if clades is not None:
                clades.note_finished(o.id, o.status, o.fitness)
        if self.dedupe is None:
            return
        for o in outcomes:
            for later in self.dedupe.waiting_on(o.id):
                self.duplicate(later, o.id)


def lineage_from_store(db: ArchiveDB) -> LineageCounts:
    """A stored campaign's children and discoveries per agent (``ArchiveDB.lineage_counts``: its snapshot and the
    rows after it), put straight into the counts' arrays: ``LineageCounts.from_counts`` takes dicts, which at
    10^7 agents cost seconds and gigabytes to build."""
    children, discoveries = db.lineage_counts()
    lineage = LineageCounts(capacity=max(len(children), len(discoveries)))
    lineage._children[: len(children)] = children
    lineage._discoveries[: len(discoveries)] = discoveries
    return lineage


def param_recipes(task: Task, mutation: MutationConfig) -> Callable[[str], Recipe | None]:
    """Operator -> the recipe its children are regenerated by (the parameters as :class:`~openended.engine.
    jobmaker.JobMaker` gives them to the worker); None for an operator whose children cannot be."""
    def recipe_of(operator: str) -> Recipe | None:
        if operator != "gaussian":
            return None
        params = mutation.params_for(operator, task)
        return Recipe("gaussian", GAUSSIAN_VERSION, recipe_params(params, task.spec.params_file))

    return recipe_of


def usage_of(r: ChildResult) -> dict:
    """What a child spent on models, as the store's Outcome fields."""
    return dict(model=r.model, tokens_in=r.tokens_in, tokens_out=r.tokens_out, cost=r.cost)


def describe_error(exc: BaseException) -> str:
    """``Type: last line of the message`` (the line that says what went wrong), as storable text."""
    lines = str(exc).strip().splitlines()
    return clean_text(f"{type(exc).__name__}: {lines[-1] if lines else type(exc).__name__}", 500)


def evaluation_row(agent_id: int, record: EvaluationRecord, fitness: float | None = None) -> Evaluation:
    """A worker's evaluation record as a storable :class:`Evaluation` with the checked ``fitness`` of its
    result: its text cleaned and cut (output tails keep their end), numbers kept only when finite and in range."""
    seconds = record.seconds
    ok_seconds = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    exit_status = record.exit_status
    ok_exit = isinstance(exit_status, int) and not isinstance(exit_status, bool) and abs(exit_status) < 2**63
    return Evaluation(
        agent_id=agent_id, stage=clean_text(record.stage, 200) or "evaluate",
        seconds=float(seconds) if ok_seconds else 0.0,
        exit_status=exit_status if ok_exit else None, fitness=fitness,
        stdout_tail=clean_text(record.stdout_tail, MAX_TAIL_CHARS, keep="tail"),
        stderr_tail=clean_text(record.stderr_tail, MAX_TAIL_CHARS, keep="tail"),
        failure_kind=None if record.failure_kind is None else clean_text(record.failure_kind, 200))
