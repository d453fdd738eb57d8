"""Typed records that cross between the driver and its Ray workers: jobs out, results back.

Four kinds of job, one per thing a worker can be asked to do:

- :class:`Breed` makes a child from its parent (or a root from nothing) and evaluates it in the
  same Ray task: parameter genomes, whose mutation is cheap and deterministic.
- :class:`Mutate` only makes a code child's genome (an LLM call or an LLM-free edit); the driver
  stores and de-duplicates it before any evaluation.
- :class:`Evaluate` evaluates a genome that is already stored.
- :class:`Tune` makes and evaluates several code children in turn, each from the results before it
  (the ``tune`` operator's search over a parent's numeric literals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openended.names import Files
from openended.sandbox.spec import FailureKind

if TYPE_CHECKING:
    from openended.gateway.relay import GatewayRoute
    from openended.mutation.prompts import MutationContext
    from openended.mutation.self_improve import Diagnosis
    from openended.sandbox.spec import EvaluationRecord


@dataclass(frozen=True, slots=True)
class Breed:
    """Make a child with ``operator`` (seeded) from ``parent_files`` (None for a root), then evaluate it."""

    agent_id: int
    seed: int
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    parent_files: Files | None = None
    gateway: GatewayRoute | None = None  # the way to this evaluation's model gateway (openended.gateway)
    stage: int = 0  # staged tasks: which of the task's [[stages]] this evaluation is (openended.engine.stages)


@dataclass(frozen=True, slots=True)
class Evaluate:
    """Evaluate ``files`` as they are: a stored code child, a user's given agent, a resumed ``mutated`` row."""

    agent_id: int
    files: Files
    gateway: GatewayRoute | None = None  # the way to this evaluation's model gateway (openended.gateway)
    stage: int = 0  # staged tasks: which of the task's [[stages]] this evaluation is (openended.engine.stages)


@dataclass(frozen=True, slots=True)
class Mutate:
    """Make a code child's genome; ``model`` names the configured model the LLM operators call."""

    agent_id: int
    seed: int
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    parent_files: Files | None = None
    model: str | None = None
    context: MutationContext | None = None
    templates_dir: str | None = None
    # Why the driver could not prepare this mutation (e.g. an unreadable parent): it fails without a call.
    unprepared: str | None = None
    gateway: GatewayRoute | None = None  # self_improve: the gateway its self-edit run is given (openended.gateway)
    seconds: float = 0.0  # time it may take beyond its model call's own limits (self_improve: the self-edit)
    # LLM operators: the answer's max_tokens, sized to the parent (openended.mutation.output_limits)
    max_tokens: int | None = None
    # self_improve with editor = "seed": the fixed agent that edits the parent's files (None: the parent itself)
    editor_files: Files | None = None


@dataclass(frozen=True, slots=True)
class Tune:
    """Tune ``parent_files``' numeric literals (openended.mutation.tune): members ``first_id`` to
    ``first_id + count - 1`` of one group, member i made from seed ``seed + i`` and evaluated; results come
    back for ``report`` (the members not yet finished) only."""

    report: tuple[int, ...]
    first_id: int
    count: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    parent_files: Files | None = None
    parent_fitness: float | None = None
    tolerance: float = 0.0

    @property
    def agent_id(self) -> int:
        """The first member it reports (what a queue of jobs orders and isolates by)."""
        return self.report[0]

    def failed(self, stage: str, reason: str) -> list[ChildResult]:
        """The results of a group that could not run: each member it reports fails with ``reason``."""
        return [ChildResult(i, fail_stage=stage, fail_reason=reason) for i in self.report]


EvalJob = Breed | Evaluate | Tune
Job = Breed | Evaluate | Mutate | Tune


@dataclass(slots=True)
class ChildResult:
    """What came back for one child: its genome, and the evaluator's raw result or a failure."""

    agent_id: int
    files: Files | None = None
    result: object = None  # the evaluator's JSON, unchecked: hostile until check_result has read it
    fail_stage: str | None = None
    fail_reason: str | None = None
    eval_seconds: float = 0.0
    # what a foundation-model mutation spent (zero for the LLM-free operators)
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    evaluation: EvaluationRecord | None = None  # how the sandbox ran it
    batch_failure: bool = False  # the whole batch failed in the sandbox: re-run its children alone
    partial: bool = False  # a cascade stopped it before its last stage: stored, kept out of the archive
    diagnosis: Diagnosis | None = None  # self_improve: the diagnosis call, stored with the child's genome
    node: str | None = None  # the Ray node that evaluated it (openended.engine.nodes); not stored in its row

    @property
    def failed(self) -> bool:
        return self.fail_stage is not None


class EngineLost(Exception):
    """A worker's evaluation failed because its node's Docker engine stopped answering (or lost the sandbox
    image), not because of its children."""

    def __init__(self, node_id: str | None, problem: str):
        super().__init__(node_id, problem)
        self.node_id = node_id  # Ray's id of the node (None outside a Ray worker)
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


# Failure reasons that blame the machinery, not the genome: a duplicate of such a child is evaluated
# itself instead of inheriting the failure. The dispatcher writes these; the store keeps them as text.
WORKER_LOST = "worker failed"
NO_RESULT = "no result within"
MACHINERY_FAILURES = (WORKER_LOST, NO_RESULT, *(kind.value for kind in FailureKind if kind.machinery))


def machinery_failure(reason: str | None) -> bool:
    """Whether a stored failure reason blames the machinery (a lost worker, the engine, the backstop)."""
    return reason is not None and reason.startswith(MACHINERY_FAILURES)
