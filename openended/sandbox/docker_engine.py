"""The ``docker`` sandbox: evaluations in containers of the sandbox image, through the docker SDK.

Every container has no network, memory (no swap), CPU and pids limits, a read-only root
filesystem with tmpfs at /work and /tmp, a non-root user, no capabilities, no host
environment, and exactly two read-only mounts: the task folder (/task) and the folder the
host writes agents into (/agents). Each evaluation is a fresh runner process (``docker exec``
in ``pool`` mode, a new container in ``fresh`` mode) with a fresh work dir; a hard wall-clock
limit kills what overruns.

Containers carry the labels ``openended.campaign`` (the campaign), ``openended.host`` and
``openended.pid`` (the worker that owns them). A pool replaces its container after any
failure and after ``pool_max_evaluations``; :func:`sweep` removes a campaign's leftovers
(after a kill -9 of the driver or a worker) when the campaign starts, resumes or ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from openended.sandbox import RUNNER, EvalOutcome, SandboxSpec
from openended.sandbox.jobdir import parse_report, write_job

LABEL = "openended.campaign"
# Extra wall-clock the host allows over the runner's own limit before it kills the container.
KILL_MARGIN_S = 5.0
RUNNER_SOURCE = RUNNER.read_text()
PYTHON = "/usr/bin/python3"


def client(timeout: int = 120):
    """A docker SDK client for this node's engine (DOCKER_HOST or the default socket)."""
    import docker

    return docker.from_env(timeout=timeout)


def docker_problem(image: str) -> str | None:
    """Why the docker sandbox cannot run here (None when it can)."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker Python package is not installed"
    try:
        api = client(timeout=5)
        api.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine means the same to the user
        return f"no Docker engine answers ({type(exc).__name__}); start dockerd or set DOCKER_HOST"
    try:
        img = api.images.get(image)
    except Exception:  # noqa: BLE001
        return f"image {image!r} is not present; build it with `openended sandbox build`"
    from openended.sandbox.image import IMAGE_VERSION, VERSION_LABEL

    found = (img.labels or {}).get(VERSION_LABEL)
    if found != IMAGE_VERSION:
        return f"image {image!r} is version {found}, this openended needs {IMAGE_VERSION}; rebuild it with `openended sandbox build`"
    return None


def container_options(spec: SandboxSpec, task_root: str, agents_dir: Path) -> dict:
    """The keyword arguments of containers.run that make a sandbox container (see the module docstring)."""
    limits = spec.limits
    memory = f"{limits.memory_mb}m"
    return dict(
        image=spec.image,
        detach=True,
        network_mode="none",
        read_only=True,
        user="65534:65534",
        environment={},
        mem_limit=memory,
        memswap_limit=memory,
        nano_cpus=int(limits.cpus * 1e9),
        pids_limit=limits.pids,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        tmpfs={"/work": f"rw,nosuid,nodev,size={max(16, limits.memory_mb // 2)}m,mode=1777",
               "/tmp": "rw,nosuid,nodev,size=16m,mode=1777"},
        volumes={str(task_root): {"bind": "/task", "mode": "ro"}, str(agents_dir): {"bind": "/agents", "mode": "ro"}},
        labels={LABEL: spec.campaign_label, "openended.host": socket.gethostname(), "openended.pid": str(os.getpid())},
        log_config={"type": "none"},
        stop_signal="SIGKILL",
    )


def sweep(label: str, *, only_dead_owners: bool = False) -> int:
    """Remove this engine's containers of a campaign; with ``only_dead_owners``, only those whose
    owning worker process (on this host) is gone. Returns how many were removed."""
    api = client()
    removed = 0
    host = socket.gethostname()
    for container in api.containers.list(all=True, filters={"label": f"{LABEL}={label}"}):
        if only_dead_owners:
            labels = container.labels
            if labels.get("openended.host") != host or _alive(int(labels.get("openended.pid", "0") or 0)):
                continue
        try:
            container.remove(force=True)
            removed += 1
        except Exception:  # noqa: BLE001 - already gone
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DockerSandbox:
    """Evaluations of one task in containers owned by this worker process."""

    def __init__(self, spec: SandboxSpec, task_root: str):
        self.spec = spec
        self.task_root = str(task_root)
        self.api = client()
        self.root = Path(tempfile.mkdtemp(prefix="openended-docker-"))
        self.root.chmod(0o755)
        self._container = None
        self._uses = 0
        sweep(spec.campaign_label, only_dead_owners=True)

    # ------------------------------------------------------------------ pool
    def _pool_container(self):
        if self._container is not None and self._uses >= self.spec.pool_max_evaluations:
            self._discard()
        if self._container is None:
            self._container = self.api.containers.run(
                command=["/bin/sleep", "infinity"], name=f"openended-{self.spec.campaign_label}-{uuid.uuid4().hex[:8]}",
                **container_options(self.spec, self.task_root, self.root),
            )
            self._uses = 0
        return self._container

    def _discard(self) -> None:
        if self._container is not None:
            try:
                self._container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._container = None

    def _exec(self, container, job: str, wall: float) -> tuple[int | None, bytes, bytes, bool]:
        """Run the runner in ``container`` with a hard wall-clock limit; (exit, stdout, stderr, killed)."""
        api = self.api.api
        exec_id = api.exec_create(container.id, [PYTHON, "-I", "-c", RUNNER_SOURCE, job], user="65534:65534",
                                  workdir="/work", environment={})["Id"]
        box: dict = {}

        def run() -> None:
            try:
                box["out"] = api.exec_start(exec_id, demux=True)
            except Exception as exc:  # noqa: BLE001 - the container was killed under it
                box["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(wall)
        killed = thread.is_alive()
        if killed:
            self._discard()  # kills the exec with its container
            thread.join(10)
        stdout, stderr = box.get("out") or (b"", b"")
        exit_code = None if killed else api.exec_inspect(exec_id).get("ExitCode")
        return exit_code, stdout or b"", stderr or b"", killed

    # ------------------------------------------------------------------ API
    def evaluate(self, agents: list[dict[str, bytes]], args: dict) -> EvalOutcome:
        limits = self.spec.limits
        job_dir = write_job(self.root, agents, task_dir="/task", args=args, limits=limits, work_root="/work")
        job = f"/agents/{job_dir.name}"
        wall = limits.timeout_s + KILL_MARGIN_S
        started = time.monotonic()
        try:
            if self.spec.mode == "fresh":
                outcome = self._fresh(job, wall, started)
            else:
                outcome = self._pooled(job, wall, started)
        except Exception as exc:  # noqa: BLE001 - the engine failed, not the child
            self._discard()
            outcome = EvalOutcome(None, "sandbox_error", f"docker: {type(exc).__name__}: {str(exc)[:300]}", None,
                                  time.monotonic() - started)
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        return outcome

    def _pooled(self, job: str, wall: float, started: float) -> EvalOutcome:
        import docker

        container = self._pool_container()
        try:
            exit_code, stdout, stderr, killed = self._exec(container, job, wall)
        except (docker.errors.NotFound, docker.errors.APIError):
            # The container went away between evaluations (swept at a campaign's end, or killed): start another.
            self._container = None
            container = self._pool_container()
            exit_code, stdout, stderr, killed = self._exec(container, job, wall)
        self._uses += 1
        if killed:
            return EvalOutcome(None, "timeout", f"no result within {self.spec.limits.timeout_s:g}s; container killed",
                               None, time.monotonic() - started)
        outcome = parse_report(stdout, stderr, exit_code, time.monotonic() - started)
        if outcome.failure_kind is not None:
            self._discard()  # a failed child may have left anything behind in the container
        return outcome

    def _fresh(self, job: str, wall: float, started: float) -> EvalOutcome:
        container = self.api.containers.run(
            command=[PYTHON, "-I", "-c", RUNNER_SOURCE, job],
            name=f"openended-{self.spec.campaign_label}-{uuid.uuid4().hex[:8]}",
            **{**container_options(self.spec, self.task_root, self.root), "log_config": {"type": "json-file"}},
        )
        try:
            try:
                status = container.wait(timeout=wall)
            except Exception:  # noqa: BLE001 - the wait timed out: a hard kill
                return EvalOutcome(None, "timeout", f"no result within {self.spec.limits.timeout_s:g}s; container killed",
                                   None, time.monotonic() - started)
            stdout = container.logs(stdout=True, stderr=False)
            stderr = container.logs(stdout=False, stderr=True)
            code = status.get("StatusCode")
            outcome = parse_report(stdout, stderr, code, time.monotonic() - started)
            if outcome.failure_kind == "sandbox_error" and container.attrs is not None:
                container.reload()
                if container.attrs.get("State", {}).get("OOMKilled"):
                    outcome.failure_kind, outcome.reason = "oom", "out of memory: the container was OOM-killed"
            return outcome
        finally:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self._discard()
        shutil.rmtree(self.root, ignore_errors=True)
