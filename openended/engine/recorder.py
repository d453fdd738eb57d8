"""From a worker's result to the store: check it, place it in the archive, commit it with the driver state.

Every write goes through :meth:`Recorder.commit`: the outcomes, the evaluation records, the elite
changes and the driver's state (RNG, archive state) in one transaction, so a kill at any moment
leaves the store at a state the campaign can resume from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from archive_db import ArchiveDB, Evaluation, Outcome
from openended.engine.dedupe import Dedupe, Verdict, decide
from openended.engine.jobs import ChildResult, Evaluate, Job
from openended.portfolio import Arm, Portfolio
from openended.qd import Archive
from openended.results import InvalidResult, check_result
from openended.selection import LineageCounts


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
                 remember: Callable[[int, dict[str, bytes]], None]):
        self.db = db
        self.archive = archive
        self.lineage = lineage
        self.portfolio = portfolio
        self.counters = counters
        self.n_descriptors = n_descriptors
        self.dedupe = dedupe  # None: parameter genomes, never de-duplicated
        self._driver_state = driver_state
        self._requeue = requeue
        self._remember = remember
        self.children: dict[int, Child] = {}  # children not yet finished
        self.last_errors: dict[int, str] = db.last_mutation_errors() if dedupe is not None else {}

    # ------------------------------------------------------------- writes
    def commit(self, outcomes: Iterable[Outcome], *, evaluations: Iterable[Evaluation] = (),
               elites: dict[int, int] | None = None) -> None:
        """Outcomes, evaluation records, elite changes and the driver state, in one transaction."""
        with self.db.transaction():
            self.db.record(list(outcomes))
            self.db.add_evaluations(list(evaluations))
            if elites:
                self.db.set_elites(elites)
            self.db.update_run(state=self._driver_state())

    def mutations(self, results: list[ChildResult]) -> None:
        """Store code children's genomes (or their mutation failures) before any evaluation."""
        for r in results:
            self.counters.spend(r)
            usage = _usage(r)
            if r.failed or r.files is None:
                child = self.children.get(r.agent_id)
                if child is not None and child.parent_id is not None:
                    self.last_errors[child.parent_id] = r.fail_reason or "no genome"
                self.finish([Outcome(r.agent_id, "failed", fail_stage=r.fail_stage or "mutation",
                                     fail_reason=r.fail_reason or "the mutation returned no genome", **usage)])
                continue
            mutated = Outcome(r.agent_id, "mutated", files=r.files, **usage)
            assert self.dedupe is not None, "only code children are mutated apart from their evaluation"
            first = self.dedupe.first(r.agent_id, r.files)
            if first != r.agent_id:
                self.duplicate(r.agent_id, first, stored=[mutated])
                continue
            self.commit([mutated])
            self._requeue(Evaluate(r.agent_id, r.files))

    def duplicate(self, agent_id: int, first: int, stored: list[Outcome] | None = None) -> None:
        """A child whose genome agent ``first`` already had: not evaluated again unless the machinery
        failed ``first``. ``stored``: steps of this child not yet committed (its genome)."""
        assert self.dedupe is not None
        decision = decide(agent_id, self.db.agent(first))
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

    def finish(self, outcomes: list[Outcome], stored: list[Outcome] | None = None) -> None:
        """Terminal outcomes that change no archive (failures and duplicates), after the ``stored``
        steps that lead to them, in one transaction."""
        for o in outcomes:
            child = self.children.pop(o.id, None)
            if child is not None and child.arm is not None:
                self.portfolio.update(child.arm, False)
        self.commit([*(stored or []), *outcomes])
        self._recorded(outcomes)

    def evaluations(self, results: list[ChildResult]) -> None:
        """Check each result, place it in the archive, and commit the batch in one transaction."""
        outcomes: list[Outcome] = []
        elites: dict[int, int] = {}
        evaluations = [Evaluation(agent_id=r.agent_id, **asdict(r.evaluation))
                       for r in results if r.evaluation is not None]
        for r in results:
            self.counters.spend(r)
            outcome = self._outcome(r)
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
        self.commit(outcomes, evaluations=evaluations, elites=elites)
        self._recorded(outcomes)

    def _outcome(self, r: ChildResult) -> Outcome:
        usage = _usage(r)
        if r.failed:
            return Outcome(r.agent_id, "failed", files=r.files, fail_stage=r.fail_stage, fail_reason=r.fail_reason,
                           **usage)
        try:
            checked = check_result(r.result, self.n_descriptors)
        except InvalidResult as exc:
            return Outcome(r.agent_id, "failed", files=r.files, fail_stage="invalid", fail_reason=str(exc),
                           eval_seconds=r.eval_seconds, **usage)
        added = self.archive.add(r.agent_id, checked.fitness, checked.descriptors)
        archived = added.status != "not_added"
        best = self.counters.best_fitness
        if best is None or checked.fitness > best:
            self.counters.best_fitness = checked.fitness
        return Outcome(
            r.agent_id, "archived" if archived else "rejected", files=r.files, **usage,
            fitness=checked.fitness, descriptors=checked.descriptors, metrics=checked.metrics,
            feedback=checked.feedback, eval_seconds=r.eval_seconds, novelty=added.novelty, cell=added.cell,
            archive_event=added.status if archived else None)

    def _recorded(self, outcomes: list[Outcome]) -> None:
        """Count outcomes now in the store, and settle the duplicates that were waiting for them."""
        for o in outcomes:
            if o.status == "failed":
                self.counters.failed += 1
            else:
                self.counters.done += 1
        if self.dedupe is None:
            return
        for o in outcomes:
            for later in self.dedupe.waiting_on(o.id):
                self.duplicate(later, o.id)


def _usage(r: ChildResult) -> dict:
    return dict(model=r.model, tokens_in=r.tokens_in, tokens_out=r.tokens_out, cost=r.cost)
