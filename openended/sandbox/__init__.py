"""Sandboxes: where a child's evaluation runs, under limits, isolated from the host.

One interface, :meth:`Sandbox.evaluate` (a batch of agents of one task -> an
:class:`EvalOutcome`), three kinds:

- ``docker``: a container per worker (``pool`` mode) or per evaluation (``fresh``) with no
  network, memory/CPU/pids limits, a read-only root, a tmpfs work dir, a non-root user and no
  host environment. The default wherever a Docker engine answers and the image is present.
- ``process``: a subprocess with rlimits and a timeout, for trusted code and machines without
  Docker. It does NOT isolate: the child can read the host's files and reach the network.
- ``inprocess``: evaluate.py imported into the Ray worker itself; no isolation and no limits
  beyond the campaign's per-task deadline (benchmarks of the engine, trusted evaluators).

The same runner (``sandboxes/runner.py``) runs inside the container and under ``process``,
so both report failures with the same kinds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The runner lives in the top-level `sandboxes` package (installed beside `openended`).
RUNNER = Path(__file__).resolve().parent.parent.parent / "sandboxes" / "runner.py"

# failure kind (reported by the runner or the host) -> the child's fail_stage in the store
FAIL_STAGE = {
    "timeout": "timeout",
    "oom": "sandbox",
    "pids": "sandbox",
    "output_limit": "sandbox",
    "sandbox_error": "sandbox",
    "crash": "evaluation",
    "no_result": "evaluation",
    "bad_result": "invalid",
}
# failures that are the whole batch's (not one agent's): the driver re-runs such a batch one child at a time
BATCH_FAILURES = frozenset(FAIL_STAGE)


class SandboxUnavailable(RuntimeError):
    """The requested sandbox cannot run here (no Docker engine, no image); the message says what to do."""


@dataclass(frozen=True)
class Limits:
    """Per-evaluation limits. ``output_bytes`` caps stdout and stderr each; more is a failure."""

    timeout_s: float = 60.0
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 64
    output_bytes: int = 1_000_000


@dataclass
class EvalOutcome:
    """What one sandboxed evaluation of a batch gave: one result dict per agent, or a failure."""

    results: list[dict] | None
    failure_kind: str | None = None
    reason: str | None = None
    exit_status: int | None = None
    seconds: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def fail_stage(self) -> str | None:
        return None if self.failure_kind is None else FAIL_STAGE.get(self.failure_kind, "sandbox")


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a worker needs to build its sandbox: small, sent with every Ray task."""

    kind: str  # "docker", "process" or "inprocess" (never "auto": resolved by the driver)
    limits: Limits = field(default_factory=Limits)
    mode: str = "pool"
    image: str = "openended-sandbox:latest"
    pool_max_evaluations: int = 500
    campaign_label: str = "default"

    def as_dict(self) -> dict:
        return asdict(self)


def campaign_label(db_path: str | os.PathLike) -> str:
    """A stable label for a campaign's containers (same database file -> same label, across resumes)."""
    return hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:16]


def limits_for(task_limits: dict, config) -> Limits:
    """The task's [limits] table, overridden by the campaign's [sandbox] settings where given."""
    base = Limits()
    pick = lambda name, cast: cast(getattr(config, name) if getattr(config, name) is not None  # noqa: E731
                                   else task_limits.get(name, getattr(base, name)))
    return Limits(timeout_s=pick("timeout_s", float), memory_mb=pick("memory_mb", int), cpus=pick("cpus", float),
                  pids=pick("pids", int), output_bytes=int(config.output_bytes))


def resolve(config, *, task_limits: dict, db_path, secrets: bool = False) -> tuple[SandboxSpec, str | None]:
    """The sandbox a campaign will use, and a note to show the user (or None).

    ``auto`` becomes ``docker`` where an engine answers and the image is present, else
    ``process`` with a note saying why. An explicit ``docker`` that cannot run raises
    SandboxUnavailable with what to do. With ``secrets`` (API keys in this machine's environment),
    ``auto`` never falls back: a child outside a container could read them.
    """
    from openended.sandbox.docker_engine import docker_problem

    kind, note = config.kind, None
    if kind in ("auto", "docker"):
        problem = docker_problem(config.image)
        if problem is None:
            kind = "docker"
        elif kind == "docker":
            raise SandboxUnavailable(f"sandbox 'docker' cannot run: {problem}")
        elif secrets:
            raise SandboxUnavailable(
                f"the Docker sandbox cannot run ({problem}), and this campaign's models read API keys from the "
                "environment, which a child outside a container could read too; fix Docker, or set "
                "sandbox.kind = 'process' to accept that risk")
        else:
            kind = "process"
            note = f"Docker sandbox unavailable ({problem}); falling back to the 'process' sandbox, which does NOT isolate children"
    if kind == "process" and note is None:
        note = "the 'process' sandbox does NOT isolate children from this machine (files, network); use it for trusted code"
    spec = SandboxSpec(kind=kind, limits=limits_for(task_limits, config), mode=config.mode, image=config.image,
                       pool_max_evaluations=config.pool_max_evaluations, campaign_label=campaign_label(db_path))
    return spec, note


_SANDBOXES: dict = {}


def get_sandbox(spec: SandboxSpec, task_root: str):
    """The sandbox for this spec and task in this process (pools are kept between Ray tasks)."""
    key = (spec, task_root)
    box = _SANDBOXES.get(key)
    if box is None:
        if spec.kind == "docker":
            from openended.sandbox.docker_engine import DockerSandbox

            box = DockerSandbox(spec, task_root)
        elif spec.kind == "process":
            from openended.sandbox.process import ProcessSandbox

            box = ProcessSandbox(spec, task_root)
        else:
            raise ValueError(f"sandbox kind {spec.kind!r} has no Sandbox object (inprocess runs in the worker)")
        _SANDBOXES[key] = box
    return box


def close_all() -> None:
    """Remove this process's containers (pools)."""
    for box in list(_SANDBOXES.values()):
        box.close()
    _SANDBOXES.clear()
