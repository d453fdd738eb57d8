"""What every sandbox shares: its limits and spec, the outcome of an evaluation, the failure kinds,
the record of how an evaluation ran, and the :class:`Sandbox` interface itself.

A leaf: it imports nothing of ``openended.sandbox`` (only the user-facing names), so the
sandboxes, the worker and the driver can all import it without a cycle.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from openended.names import Files, SandboxKind, SandboxMode

# Where a failed evaluation leaves the child in the store (a subset of archive_db's fail stages).
EvalFailStage = Literal["timeout", "sandbox", "evaluation", "invalid"]

EvalArgs = Mapping[str, object]
"""The task's evaluation arguments (``task.toml``'s [evaluate] table), passed to ``evaluate_batch``."""


class SandboxUnavailable(RuntimeError):
    """The requested sandbox cannot run here (no Docker engine, no image); the message says what to do."""


class FailureKind(enum.StrEnum):
    """Why an evaluation gave no results. The runner (``sandboxes/runner.py``) reports these by value."""

    TIMEOUT = "timeout"  # past the wall-clock limit; killed
    OOM = "oom"  # the memory limit
    PIDS = "pids"  # the process limit
    OUTPUT_LIMIT = "output_limit"  # more stdout or stderr than the limit
    CRASH = "crash"  # the evaluation raised or exited with an error
    NO_RESULT = "no_result"  # it exited cleanly without sending a result
    BAD_RESULT = "bad_result"  # its result is not JSON, too large, too deep, or not one per agent
    FORGED_RESULT = "forged_result"  # a result not from the evaluator: wrong token, a second result, a result
    # file, or an agent that tampered with its evaluation (sandboxes.agent.ForgedResult)
    SANDBOX_ERROR = "sandbox_error"  # the machinery failed (the engine, the runner), not the child

    @property
    def stage(self) -> EvalFailStage:
        """The child's fail_stage in the store."""
        return _STAGE[self]

    @property
    def machinery(self) -> bool:
        """Whether the failure blames the machinery rather than the genome (a duplicate is then evaluated itself)."""
        return self is FailureKind.SANDBOX_ERROR

    @classmethod
    def parse(cls, value: object) -> FailureKind:
        """The kind a report names; an unknown name is the sandbox's own failure."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.SANDBOX_ERROR


_STAGE: dict[FailureKind, EvalFailStage] = {
    FailureKind.TIMEOUT: "timeout",
    FailureKind.OOM: "sandbox",
    FailureKind.PIDS: "sandbox",
    FailureKind.OUTPUT_LIMIT: "sandbox",
    FailureKind.SANDBOX_ERROR: "sandbox",
    FailureKind.CRASH: "evaluation",
    FailureKind.NO_RESULT: "evaluation",
    FailureKind.BAD_RESULT: "invalid",
    FailureKind.FORGED_RESULT: "invalid",
}



def gateway_problem(agents: Sequence[object], gateway: str | None) -> str | None:
    """Why an evaluation cannot be given the gateway socket ``gateway`` (None when it can, or when none is asked)."""
    if gateway is None:
        return None
    if len(agents) != 1:
        return f"the model gateway serves one agent per evaluation (its calls are charged to it), not {len(agents)}"
    import os
    import stat

    try:
        if not stat.S_ISSOCK(os.stat(gateway).st_mode):
            return f"the gateway path {gateway} is not a socket"
    except OSError as exc:
        return f"the gateway socket {gateway} is gone: {exc.strerror}"
    return None


def short_error(exc: BaseException) -> str:
    """An exception as a failure reason: its type and message as Python prints them, at most 500 characters."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:500]

@dataclass(frozen=True)
class Limits:
    """Per-evaluation limits. ``output_bytes`` caps stdout and stderr each; more is a failure."""

    timeout_s: float = 60.0
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 64
    output_bytes: int = 1_000_000


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a worker needs to build its sandbox: small, sent with every Ray task."""

    kind: SandboxKind  # never "auto": the driver resolves it (see openended.sandbox.resolve)
    limits: Limits = field(default_factory=Limits)
    mode: SandboxMode = "pool"
    image: str = "openended-sandbox:latest"
    pool_max_evaluations: int = 500
    campaign_label: str = "default"
    # Evaluations may be given the model gateway (docker: every container gets a folder of its own,
    # mounted read-only at /gateway, where an evaluation's socket appears while it runs).
    gateway: bool = False
    # Folders of the task folder that evaluations never see (a scorer stage's hidden files): docker and
    # process sandboxes copy the task folder without them.
    hidden: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """How one evaluation ran, one per child of the batch: its fields are the store's ``evaluations`` columns."""

    seconds: float
    exit_status: int | None = None
    failure_kind: FailureKind | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    stage: str = "evaluate"


@dataclass
class EvalOutcome:
    """What one evaluation of a batch gave: one result per agent (the evaluator's JSON, unchecked), or a failure."""

    results: list[object] | None
    failure_kind: FailureKind | None = None
    reason: str | None = None
    exit_status: int | None = None
    seconds: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    retire: str | None = None  # why the container that ran it must not run another job (docker, pool)

    @classmethod
    def failed(cls, kind: FailureKind, reason: str, *, exit_status: int | None = None, seconds: float = 0.0,
               stderr_tail: str = "") -> EvalOutcome:
        return cls(None, kind, reason, exit_status, seconds, "", stderr_tail)

    @property
    def fail_stage(self) -> EvalFailStage | None:
        return None if self.failure_kind is None else self.failure_kind.stage

    @property
    def fail_reason(self) -> str | None:
        """The child's fail_reason in the store: the kind, then why (e.g. ``oom: out of memory: ...``)."""
        return None if self.failure_kind is None else f"{self.failure_kind}: {self.reason}"

    def record(self) -> EvaluationRecord:
        return EvaluationRecord(seconds=self.seconds, exit_status=self.exit_status, failure_kind=self.failure_kind,
                                stdout_tail=self.stdout_tail, stderr_tail=self.stderr_tail)


@runtime_checkable
class Sandbox(Protocol):
    """Where a batch of one task's agents is evaluated, under the spec's limits.

    ``evaluate`` never raises for anything a child does: every failure is an :class:`EvalOutcome`
    with a :class:`FailureKind`. ``close`` releases what the sandbox holds (containers, folders);
    a closed sandbox may still evaluate (it starts over).

    ``gateway``: the host path of the evaluation's model-gateway socket
    (``openended.gateway.Lease.socket_path``); the evaluation and its agents find it at the path in
    ``$OPENENDED_MODEL_SOCKET``. Only for one agent at a time (its calls are that agent's)."""

    spec: SandboxSpec

    def evaluate(self, agents: Sequence[Files], args: EvalArgs, *, gateway: str | None = None) -> EvalOutcome: ...

    def close(self) -> None: ...
