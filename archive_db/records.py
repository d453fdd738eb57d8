"""What the store takes in (:class:`Proposal`, :class:`Outcome`, :class:`Evaluation`) and how it
checks it before writing anything (:func:`check_outcome` holds the agent lifecycle's rules).

Lifecycle of an agent (one row of ``agents``)::

    proposed -> mutated -> evaluated -> archived | rejected
        \\__________\\__________\\______-> failed

``archived``, ``rejected`` and ``failed`` are terminal. The database's triggers and CHECKs refuse
the same moves; these checks say which agent and which field is wrong, before any write.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import InvalidTransitionError, InvalidValueError
from .genomes import GenomeParts, genome_parts
from .recipes import Recipe

STATUSES: tuple[str, ...] = ("proposed", "mutated", "evaluated", "archived", "rejected", "failed")
TERMINAL_STATUSES = frozenset({"archived", "rejected", "failed"})
FAIL_STAGES: tuple[str, ...] = ("mutation", "sandbox", "evaluation", "timeout", "invalid", "internal")
RUN_STATUSES: tuple[str, ...] = ("created", "running", "stopped", "finished", "failed")
ARCHIVE_EVENTS = frozenset({"new_cell", "improved"})
_RANK = {"proposed": 0, "mutated": 1, "evaluated": 2, "archived": 3, "rejected": 3}
NEEDS_GENOME = frozenset({"mutated", "evaluated", "archived", "rejected"})
NEEDS_FITNESS = frozenset({"evaluated", "archived", "rejected"})
_OUTCOME_TARGETS = frozenset({"mutated", "evaluated", "archived", "rejected", "failed"})


# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True, slots=True)
class Proposal:
    """A child about to be created: written (status ``proposed``) before any remote work."""

    id: int
    parent_id: int | None
    operator: str
    seed: int
    parent2_id: int | None = None
    model: str | None = None


@dataclass(slots=True)
class Outcome:
    """A forward step of one agent. Fields left ``None`` keep the row's current value;
    ``tokens_in``, ``tokens_out`` and ``cost`` are added to the row's running totals."""

    id: int
    status: str
    files: dict[str, bytes] | None = None
    genome_hash: str | None = None
    fitness: float | None = None
    descriptors: Sequence[float] | None = None
    metrics: dict[str, Any] | None = None
    feedback: str | None = None
    eval_seconds: float | None = None
    novelty: float | None = None
    cell: int | None = None
    archive_event: str | None = None
    fail_stage: str | None = None
    fail_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    model: str | None = None
    duplicate_of: int | None = None
    recipe: Recipe | None = None  # how ``files`` were made from the parent: the store may keep them compact


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation stage of an agent (a row of ``evaluations``; an agent may have several)."""

    agent_id: int
    stage: str
    seconds: float
    exit_status: int | None = None
    fitness: float | None = None
    result: dict[str, Any] | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    failure_kind: str | None = None
    started_at: float | None = None  # None: ``seconds`` before it is recorded


class AgentState(NamedTuple):
    """What the lifecycle rules need to know of an agent's stored row."""

    status: str
    has_genome: bool
    has_fitness: bool  # fitness and descriptors are both stored


@dataclass(slots=True)
class CheckedOutcome:
    """An :class:`Outcome` that passed :func:`check_outcome`: values as they will be stored."""

    id: int
    status: str
    genome: GenomeParts | None  # the files given, hashed: to store
    genome_hash: str | None  # the agent's genome (from the files, or an already stored one)
    fitness: float | None
    descriptors: list[float] | None
    metrics: str | None  # JSON
    feedback: str | None
    eval_seconds: float | None
    novelty: float | None
    cell: int | None
    archive_event: str | None
    fail_stage: str | None
    fail_reason: str | None
    tokens_in: int
    tokens_out: int
    cost: float
    model: str | None
    duplicate_of: int | None
    state: AgentState  # the agent's state once this step is applied
    recipe: Recipe | None = None  # given with the files (archive_db.recipes)


# --------------------------------------------------------------------------------------------
# value checks


def as_int(value: object, what: str) -> int:
    """``value`` as an int (any integer type but bool); InvalidValueError naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise InvalidValueError(f"{what} must be an integer, not {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidValueError(f"{what} must be an integer, not {value!r}") from None


def finite(value: object, what: str) -> float:
    """``value`` as a finite float; InvalidValueError naming ``what`` otherwise."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidValueError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(f):
        raise InvalidValueError(f"{what} is not finite ({f})")
    return f


def to_json(value: object, what: str) -> str:
    """Compact JSON with finite numbers only; InvalidValueError naming ``what`` otherwise."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} is not JSON-serialisable with finite numbers: {exc}") from None


def _descriptors(value: Sequence[float], n_descriptors: int | None, aid: int) -> list[float]:
    try:
        desc = [float(x) for x in value]
    except (TypeError, ValueError):
        raise InvalidValueError(f"agent {aid}: descriptors must be a sequence of numbers, not {value!r}") from None
    if n_descriptors is not None and len(desc) != n_descriptors:
        raise InvalidValueError(
            f"agent {aid}: descriptors have length {len(desc)}, expected {n_descriptors} (the run's descriptor length)"
        )
    for x in desc:
        if not math.isfinite(x):
            raise InvalidValueError(f"agent {aid}: descriptors contain a non-finite value ({x})")
    return desc


# --------------------------------------------------------------------------------------------
# record checks


def check_proposal(p: object) -> Proposal:
    """A :class:`Proposal` with integer ids, a parent id below the child's, an operator and a seed."""
    if not isinstance(p, Proposal):
        raise InvalidValueError(f"propose() takes Proposal objects, not {type(p).__name__}")
    pid = as_int(p.id, "agent id")
    if pid < 0:
        raise InvalidValueError(f"agent id must be >= 0, not {pid}")
    for field in ("parent_id", "parent2_id"):
        value = getattr(p, field)
        if value is None:
            continue
        parent = as_int(value, f"agent {pid}: {field}")
        # Lineage queries rely on it: a parent is always proposed before its child.
        if parent >= pid:
            raise InvalidValueError(f"agent {pid}: {field} {parent} must be a smaller id than the child's")
    if not isinstance(p.operator, str) or not p.operator:
        raise InvalidValueError(f"agent {pid}: operator must be a non-empty string")
    as_int(p.seed, f"agent {pid}: seed")
    return p


def _check_transition(aid: int, cur: str, tgt: str) -> None:
    if tgt not in _OUTCOME_TARGETS:
        if tgt in STATUSES:
            raise InvalidTransitionError(f"agent {aid}: illegal status transition {cur} -> {tgt}")
        raise InvalidValueError(f"agent {aid}: unknown status {tgt!r}; expected one of {STATUSES}")
    if cur in TERMINAL_STATUSES:
        raise InvalidTransitionError(f"agent {aid}: illegal status transition {cur} -> {tgt} ({cur} is terminal)")
    if tgt != "failed" and _RANK[tgt] <= _RANK[cur]:
        raise InvalidTransitionError(f"agent {aid}: illegal status transition {cur} -> {tgt} (not a forward move)")


def _check_genome(o: Outcome, aid: int) -> tuple[GenomeParts | None, str | None]:
    if o.files is not None:
        genome = genome_parts(o.files, f"agent {aid}")
        if o.genome_hash is not None and o.genome_hash != genome.hash:
            raise InvalidValueError(
                f"agent {aid}: genome_hash {o.genome_hash} does not match the files given ({genome.hash})"
            )
        return genome, genome.hash
    if o.genome_hash is not None and not isinstance(o.genome_hash, str):
        raise InvalidValueError(f"agent {aid}: genome_hash must be a string")
    return None, o.genome_hash


def _check_recipe(o: Outcome, aid: int) -> Recipe | None:
    r = o.recipe
    if r is None:
        return None
    if not isinstance(r, Recipe):
        raise InvalidValueError(f"agent {aid}: recipe must be a Recipe, not {type(r).__name__}")
    if o.files is None:
        raise InvalidValueError(f"agent {aid}: a recipe comes with the files it made")
    if not isinstance(r.operator, str) or not r.operator:
        raise InvalidValueError(f"agent {aid}: recipe operator must be a non-empty string")
    as_int(r.version, f"agent {aid}: recipe version")
    if not isinstance(r.params, Mapping):
        raise InvalidValueError(f"agent {aid}: recipe params must be a mapping, not {type(r.params).__name__}")
    to_json(dict(r.params), f"agent {aid}: recipe params")
    return r


def _check_failure(o: Outcome, aid: int) -> None:
    if o.status == "failed":
        if o.fail_stage not in FAIL_STAGES:
            raise InvalidValueError(f"agent {aid}: fail_stage must be one of {FAIL_STAGES}, not {o.fail_stage!r}")
        if not isinstance(o.fail_reason, str) or not o.fail_reason:
            raise InvalidValueError(f"agent {aid}: a failed outcome needs a fail_reason")
    elif o.fail_stage is not None or o.fail_reason is not None:
        raise InvalidValueError(f"agent {aid}: fail_stage/fail_reason given for status {o.status!r}")


def check_outcome(o: object, current: AgentState, *, n_descriptors: int | None = None) -> CheckedOutcome:
    """Check one forward step of an agent whose stored row is in state ``current``.

    Refuses (InvalidValueError, InvalidTransitionError; the message names the agent and the
    field) a status that is not a forward move, a step without the data its status needs
    (a genome from ``mutated`` on, fitness and descriptors from ``evaluated`` on, a stage and
    reason for ``failed``), non-finite numbers, descriptors whose length is not
    ``n_descriptors`` (when given), non-JSON metrics and negative usage. Whether a
    ``genome_hash`` or ``duplicate_of`` given by reference exists is for the caller to check.
    """
    if not isinstance(o, Outcome):
        raise InvalidValueError(f"record() takes Outcome objects, not {type(o).__name__}")
    aid = as_int(o.id, "agent id")
    tgt = o.status
    _check_transition(aid, current.status, tgt)
    genome, gh = _check_genome(o, aid)
    fitness = None if o.fitness is None else finite(o.fitness, f"agent {aid}: fitness")
    novelty = None if o.novelty is None else finite(o.novelty, f"agent {aid}: novelty")
    desc = None if o.descriptors is None else _descriptors(o.descriptors, n_descriptors, aid)
    eval_seconds = None if o.eval_seconds is None else finite(o.eval_seconds, f"agent {aid}: eval_seconds")
    state = AgentState(tgt, current.has_genome or gh is not None,
                       current.has_fitness or (fitness is not None and desc is not None))
    if tgt in NEEDS_GENOME and not state.has_genome:
        raise InvalidTransitionError(
            f"agent {aid}: illegal status transition {current.status} -> {tgt}: no genome (give files or genome_hash)"
        )
    if tgt in NEEDS_FITNESS and not state.has_fitness:
        raise InvalidTransitionError(
            f"agent {aid}: illegal status transition {current.status} -> {tgt}: needs fitness and descriptors"
        )
    _check_failure(o, aid)
    if o.archive_event is not None and o.archive_event not in ARCHIVE_EVENTS:
        raise InvalidValueError(
            f"agent {aid}: archive_event must be 'new_cell', 'improved' or None, not {o.archive_event!r}"
        )
    cell = None if o.cell is None else as_int(o.cell, f"agent {aid}: cell")
    metrics = None if o.metrics is None else to_json(o.metrics, f"agent {aid}: metrics")
    tin = as_int(o.tokens_in, f"agent {aid}: tokens_in")
    tout = as_int(o.tokens_out, f"agent {aid}: tokens_out")
    cost = finite(o.cost, f"agent {aid}: cost")
    if tin < 0 or tout < 0 or cost < 0:
        raise InvalidValueError(f"agent {aid}: tokens and cost must be >= 0")
    dup = None if o.duplicate_of is None else as_int(o.duplicate_of, f"agent {aid}: duplicate_of")
    return CheckedOutcome(
        id=aid, status=tgt, genome=genome, genome_hash=gh, fitness=fitness, descriptors=desc, metrics=metrics,
        feedback=o.feedback, eval_seconds=eval_seconds, novelty=novelty, cell=cell, archive_event=o.archive_event,
        fail_stage=o.fail_stage, fail_reason=o.fail_reason, tokens_in=tin, tokens_out=tout, cost=cost,
        model=o.model, duplicate_of=dup, state=state, recipe=_check_recipe(o, aid),
    )


EvaluationRow = tuple[int, str, float, float, int | None, float | None, str | None, str, str, str | None]


def check_evaluation(ev: object, now: float) -> EvaluationRow:
    """An :class:`Evaluation` as a row of ``evaluations`` (``started_at`` defaults to ``now -
    seconds``): finite numbers, a JSON-serialisable result, strings where strings belong."""
    if not isinstance(ev, Evaluation):
        raise InvalidValueError(f"add_evaluations() takes Evaluation objects, not {type(ev).__name__}")
    aid = as_int(ev.agent_id, "evaluation agent_id")
    if not isinstance(ev.stage, str) or not ev.stage:
        raise InvalidValueError(f"agent {aid}: evaluation stage must be a non-empty string, not {ev.stage!r}")
    seconds = finite(ev.seconds, f"agent {aid}: seconds")
    fitness = None if ev.fitness is None else finite(ev.fitness, f"agent {aid}: evaluation fitness")
    result = None if ev.result is None else to_json(ev.result, f"agent {aid}: result")
    exit_status = None if ev.exit_status is None else as_int(ev.exit_status, f"agent {aid}: exit_status")
    started_at = now - seconds if ev.started_at is None else finite(ev.started_at, f"agent {aid}: started_at")
    for name in ("stdout_tail", "stderr_tail", "failure_kind"):
        value = getattr(ev, name)
        if value is not None and not isinstance(value, str):
            raise InvalidValueError(f"agent {aid}: evaluation {name} must be a string, not {type(value).__name__}")
    return (aid, ev.stage, started_at, seconds, exit_status, fitness, result, ev.stdout_tail or "",
            ev.stderr_tail or "", ev.failure_kind)


class EvaluationRun(NamedTuple):
    """One sandbox run as stored: its ``evaluation_runs`` columns after the count of agents (``stage`` ...
    ``failure_kind``; the fitness None when it is shared) and the agents it evaluated."""

    columns: tuple[object, ...]
    agent_ids: list[int]


def evaluation_runs(rows: Iterable[EvaluationRow], finished: Mapping[int, float | None]) -> list[EvaluationRun]:
    """Checked evaluation rows as sandbox runs. Adjacent rows of different agents (one run of a batch) that
    differ only in agent id and fitness, each fitness its finished agent's (``finished``: agent id -> stored
    fitness, for agents in a terminal status), become one run with no fitness of its own; any other row is a
    run of one agent, its fitness kept."""
    # (first row, its columns but agent and fitness, agents, shares the agents' fitness)
    runs: list[tuple[EvaluationRow, tuple[object, ...], list[int], bool]] = []
    for row in rows:
        aid, fitness, rest = row[0], row[5], row[1:5] + row[6:]
        shared = aid in finished and finished[aid] == fitness
        if runs:
            _, run_rest, agents, was_shared = runs[-1]
            if shared and was_shared and aid not in agents and run_rest == rest:
                agents.append(aid)
                continue
        runs.append((row, rest, [aid], shared))
    return [EvaluationRun((*first[1:5], first[5] if len(agents) == 1 else None, *first[6:]), agents)
            for first, _, agents, _ in runs]
