"""Sandboxes: where a child's evaluation runs, under limits, isolated from the host.

One interface, :class:`Sandbox` (``evaluate``: a batch of agents of one task -> an
:class:`EvalOutcome`, whose failures carry a :class:`FailureKind`), three kinds:

- ``docker``: a container per worker (``pool`` mode) or per evaluation (``fresh``) with no
  network, memory/CPU/pids limits, a read-only root, a tmpfs work dir, a non-root user and no
  host environment. The default wherever a Docker engine answers and the image is present.
- ``process``: a subprocess with rlimits and a timeout, for trusted code and machines without
  Docker. It does NOT isolate: the child can read the host's files and reach the network.
- ``inprocess``: evaluate.py imported into the Ray worker itself; no isolation and no limits
  beyond the campaign's per-task deadline (benchmarks of the engine, trusted evaluators).

The same runner (``sandboxes/runner.py``) runs inside the container and under ``process``,
so both report failures with the same kinds.

Modules: ``spec`` (the types, a leaf), ``engine`` (the Docker engine: client, container options,
sweep, image version), ``docker_sandbox``, ``process``, ``inprocess``, ``jobdir`` (the runner's
job folder and report), ``image`` (build and check the image).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from openended.names import SandboxKind, SandboxMode
from openended.sandbox.engine import IMAGE_VERSION, sweep
from openended.sandbox.spec import (
    EvalArgs,
    EvalFailStage,
    EvalOutcome,
    EvaluationRecord,
    FailureKind,
    Limits,
    Sandbox,
    SandboxSpec,
    SandboxUnavailable,
)

__all__ = ["EvalArgs", "EvalFailStage", "EvalOutcome", "EvaluationRecord", "FailureKind", "Limits", "Sandbox",
           "SandboxSettings", "SandboxSpec", "SandboxUnavailable", "campaign_label", "describe", "get_sandbox",
           "limits_for", "resolve", "sweep"]


def campaign_label(db_path: str | os.PathLike[str]) -> str:
    """A stable label for a campaign's containers (same database file -> same label, across resumes)."""
    return hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:16]


class SandboxSettings(Protocol):
    """The campaign's [sandbox] settings as this package reads them (``openended.config.SandboxConfig``)."""

    @property
    def kind(self) -> SandboxKind: ...
    @property
    def mode(self) -> SandboxMode: ...
    @property
    def image(self) -> str: ...
    @property
    def pool_max_evaluations(self) -> int: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def memory_mb(self) -> int | None: ...
    @property
    def cpus(self) -> float | None: ...
    @property
    def pids(self) -> int | None: ...
    @property
    def output_bytes(self) -> int: ...


def limits_for(task_limits: Mapping[str, float], config: SandboxSettings) -> Limits:
    """The task's [limits] table, overridden by the campaign's [sandbox] settings where given."""
    base = Limits()

    def pick(given: float | None, name: str) -> float:
        return float(given if given is not None else task_limits.get(name, getattr(base, name)))

    return Limits(timeout_s=pick(config.timeout_s, "timeout_s"), memory_mb=int(pick(config.memory_mb, "memory_mb")),
                  cpus=pick(config.cpus, "cpus"), pids=int(pick(config.pids, "pids")),
                  output_bytes=int(config.output_bytes))


def resolve(config: SandboxSettings, *, task_limits: Mapping[str, float], db_path: str | os.PathLike[str],
            secrets: bool = False) -> tuple[SandboxSpec, str | None]:
    """The sandbox a campaign will use, and a note to show the user (or None).

    ``auto`` becomes ``docker`` where an engine answers and the image is present (with a note when the
    image carries another numpy than this machine's: its children's results are then not the ``process``
    sandbox's), else ``process`` with a note saying why. An explicit ``docker`` that cannot run raises
    SandboxUnavailable with what to do. With ``secrets`` (API keys in this machine's environment),
    ``auto`` never falls back: a child outside a container could read them.
    """
    from openended.sandbox.engine import docker_problem, host_numpy, image_numpy

    kind: SandboxKind = config.kind
    note = None
    if kind in ("auto", "docker"):
        problem = docker_problem(config.image)
        if problem is None:
            kind = "docker"
            note = _numpy_note(config.image, image_numpy(config.image), host_numpy())
        elif kind == "docker":
            raise SandboxUnavailable(f"sandbox 'docker' cannot run: {problem}")
        elif secrets:
            raise SandboxUnavailable(
                f"the Docker sandbox cannot run ({problem}), and this campaign's models read API keys from the "
                "environment, which a child outside a container could read too; fix Docker, or set "
                "sandbox.kind = 'process' to accept that risk")
        else:
            kind = "process"
            note = (f"Docker sandbox unavailable ({problem}); falling back to the 'process' sandbox, "
                    "which does NOT isolate children")
    if kind == "process" and note is None:
        note = ("the 'process' sandbox does NOT isolate children from this machine (files, network); "
                "use it for trusted code")
    spec = SandboxSpec(kind=kind, limits=limits_for(task_limits, config), mode=config.mode, image=config.image,
                       pool_max_evaluations=config.pool_max_evaluations, campaign_label=campaign_label(db_path))
    return spec, note


def _numpy_note(image: str, carried: str | None, host: str) -> str | None:
    if carried is None or carried == host:  # None: its label could not be read (nothing to say)
        return None
    return (f"the image {image} carries numpy {carried}, this machine has numpy {host}: children round "
            f"as that numpy does, not as the 'process' sandbox would here; `openended sandbox build` rebuilds it")


def describe(spec: SandboxSpec, note: str | None = None) -> str:
    """The sandbox in use, as the banner, the summary line and ``status`` show it: kind, mode and
    image version for docker, and why a campaign fell back to ``process``."""
    if spec.kind == "docker":
        return f"docker ({spec.mode}, image {spec.image} v{IMAGE_VERSION})"
    fell_back = note is not None and "falling back" in note
    return f"{spec.kind} ({note.split(';')[0]})" if fell_back and note else spec.kind


_SANDBOXES: dict[tuple[SandboxSpec, str], Sandbox] = {}


def get_sandbox(spec: SandboxSpec, task_root: str) -> Sandbox:
    """The sandbox for this spec and task in this process (kept between Ray tasks: a pool's container lives on)."""
    key = (spec, str(task_root))
    box = _SANDBOXES.get(key)
    if box is None:
        box = _SANDBOXES[key] = _make(spec, str(task_root))
    return box


def _make(spec: SandboxSpec, task_root: str) -> Sandbox:
    if spec.kind == "docker":
        from openended.sandbox.docker_sandbox import DockerSandbox

        return DockerSandbox(spec, task_root)
    if spec.kind == "process":
        from openended.sandbox.process import ProcessSandbox

        return ProcessSandbox(spec, task_root)
    if spec.kind == "inprocess":
        from openended.sandbox.inprocess import InProcessSandbox

        return InProcessSandbox(spec, task_root)
    raise ValueError(f"sandbox kind {spec.kind!r} is not resolved (see openended.sandbox.resolve)")
