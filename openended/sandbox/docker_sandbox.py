"""The ``docker`` sandbox: evaluations in containers of the sandbox image, through the docker SDK.

Every container has no network, memory (no swap), CPU and pids limits, a read-only root
filesystem with tmpfs at /work and /tmp, a non-root user, no capabilities, openended's seccomp
profile, a private IPC namespace, no host environment, and exactly two read-only mounts: a copy
of the task folder (/task) and the folder the host writes agents into (/agents), both under a
fresh temporary folder whose path says nothing of the host's layout. Every evaluation runs in
a fresh process with a fresh work dir, forked by the runner (``sandboxes/runner.py``); a hard
wall-clock limit kills the container of an evaluation that overruns.

A container's main process is the runner in ``--serve`` mode. The host writes a job folder
under /agents, sends its path on the container's stdin and reads the report line from its
stdout, both through one attach stream: no ``docker exec`` (50-100 ms each on a busy
machine), about 1 ms of round trip. No child can reach that stream (see the runner), and
between jobs the runner kills whatever a child left running, removes its IPC objects and empties
/work, /tmp, /dev/shm and /dev/mqueue; a report carrying ``retire`` (something survived that)
retires the container.

A container's runner takes the niceness of the worker that starts it (:func:`serve_command`): the engine
would otherwise run it at its own, 0, whatever the campaign was started under.

- ``pool``: a worker keeps its container for up to ``pool_max_evaluations`` jobs.
- ``fresh``: every container gets exactly one job, after which its stdin is closed.

The model gateway (``SandboxSpec.gateway``): every container gets a folder of its own, mounted
read-only at /gateway; while an evaluation given ``gateway=SOCKET`` runs, a hard link to that socket
(the gateway's, in a folder no container sees) is /gateway/model.sock, and the evaluation finds
it in ``$OPENENDED_MODEL_SOCKET``. A per-container folder rather than a per-evaluation mount because
a pool container is started before the evaluation it will run is known; a container runs one
evaluation at a time, and the link is removed when it ends (so is the gateway's socket).

A retired container is removed in the background, and its successor is started in the
background at once (it runs nothing until the next evaluation hands it a job), so neither
delays the result nor, given any gap between evaluations, the next one.

A pool replaces its container after any failure and after ``pool_max_evaluations``;
:func:`openended.sandbox.engine.sweep` removes a campaign's leftovers (after a kill -9 of the
driver or a worker) when the campaign starts, resumes or ends.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from openended.names import Files
from openended.sandbox.engine import (
    HOST_CONFIG_KEYS,
    PYTHON,
    client,
    container_options,
    copy_task,
    neutral_folders,
    sweep,
)
from openended.sandbox.jobdir import parse_report, runner_command, write_job
from openended.sandbox.spec import EvalArgs, EvalOutcome, FailureKind, SandboxSpec, gateway_problem

# Where a container with the gateway (SandboxSpec.gateway) sees its own folder, and the evaluation's socket in it.
GATEWAY_MOUNT = "/gateway"
GATEWAY_SOCKET = "model.sock"
# Extra wall-clock the host allows over the runner's own limit before it kills the container.
KILL_MARGIN_S = 5.0
STDERR_TAIL = 4000


def niceness() -> int:
    """This process's niceness (0 where it cannot be read)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        return 0


def serve_command(nice: int) -> list[str]:
    """A serving container's command: the runner in ``--serve`` mode, under ``nice`` when the worker is niced.

    The engine starts a container's processes at its own niceness (0), not the worker's: a campaign started with
    ``nice -n 19`` had its evaluations, most of its CPU, run at 0, ahead of the work it meant to yield to (and a
    benchmark's raw simulator in niced Ray workers, behind them). ``nice`` (coreutils, in the image) execs the
    runner, which stays the container's PID 1; a niceness can only be raised, so none above 0 is asked for."""
    command = runner_command(PYTHON, "--serve")
    return ["/usr/bin/nice", "-n", str(nice), *command] if nice > 0 else command


def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="openended-docker")


class ContainerGone(RuntimeError):
    """The container's attach stream ended: the container was removed, or its runner died."""


class Channel:
    """The attach stream of one container: lines to the runner's stdin, its stdout and stderr back.

    Without a TTY the engine multiplexes stdout and stderr into frames of an 8-byte header
    (stream number, three zero bytes, big-endian payload size) and the payload."""

    def __init__(self, api: Any, container_id: str):
        self._io = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._sock = getattr(self._io, "_sock", self._io)
        self._pending = bytearray()
        self.stderr_tail = b""

    def ended(self) -> bool:
        """Whether the stream has ended; only meaningful between jobs, when the runner writes nothing."""
        try:
            poller = select.poll()  # not select.select(): a busy worker's fds may pass 1024
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):  # closed
            return True

    def send(self, line: str) -> None:
        try:
            self._sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise ContainerGone(f"stdin closed: {exc}") from exc

    def end_input(self) -> None:
        """Close the runner's stdin (the container was created with stdin_once): it takes no more jobs."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise ContainerGone(f"stdin closed: {exc}") from exc

    def read_line(self, deadline: float) -> bytes:
        """The next complete line the runner writes on stdout; TimeoutError past ``deadline``."""
        line = bytearray()
        while not line.endswith(b"\n"):
            stream, payload = self._frame(deadline)
            if stream is None:
                raise ContainerGone("the stream ended before a report")
            self._route(stream, payload, line)
        return bytes(line)

    def close(self) -> None:
        for closable in (self._sock, self._io):
            try:
                closable.close()
            except OSError:
                pass

    def _route(self, stream: int, payload: bytes, stdout: bytearray) -> None:
        if stream == 2:
            self.stderr_tail = (self.stderr_tail + payload)[-STDERR_TAIL:]
        else:
            stdout += payload

    def _frame(self, deadline: float) -> tuple[int | None, bytes]:
        header = self._read(8, deadline)
        if header is None:
            return None, b""
        payload = self._read(struct.unpack(">I", header[4:])[0], deadline)
        return (None, b"") if payload is None else (header[0], payload)

    def _read(self, size: int, deadline: float) -> bytes | None:
        while len(self._pending) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(max(65536, size - len(self._pending)))
            except TimeoutError:  # the socket's timeout (an OSError too): past the deadline
                raise
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self._pending += chunk
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data


class Serving:
    """A started container whose main process is the serving runner: its id, its channel, its job count, and
    its gateway folder (mounted read-only at /gateway; None when the spec has no gateway)."""

    def __init__(self, container_id: str, channel: Channel, gateway_dir: Path | None = None):
        self.id = container_id
        self.channel = channel
        self.uses = 0
        self.gateway_dir = gateway_dir


class DockerSandbox:
    """Evaluations of one task in containers owned by this worker process.

    Both modes evaluate in a :class:`Serving` container. ``pool`` keeps one until a failure or
    ``pool_max_evaluations``; ``fresh`` gives each container exactly one job (and closes its
    stdin, so the runner takes no other). Whenever the current container is retired the next
    one is started in the background, so its start overlaps the gap before the next evaluation;
    it has run nothing until then.
    """

    def __init__(self, spec: SandboxSpec, task_root: str):
        self.spec = spec
        self.task_root = str(task_root)
        self.api = client()
        self.root, self.task, self.agents = neutral_folders()
        self._container: Serving | None = None
        self._next: Future | None = None  # of the Serving container that will replace _container
        self._background = _executor()  # container starts and removals, off the evaluations' path
        sweep(spec.campaign_label, only_dead_owners=True)

    @property
    def _max_uses(self) -> int:
        return 1 if self.spec.mode == "fresh" else max(1, self.spec.pool_max_evaluations)

    # ------------------------------------------------------------ containers
    def _create(self, command: list[str], gateway_dir: Path | None = None) -> str:
        """Create (not start) a sandbox container; its id. Its stdin stays open for the first
        attached client and closes when that client goes: the serving runner then exits."""
        opts = container_options(self.spec, self.task, self.agents)
        opts.pop("detach")
        api = self.api.api
        volumes = opts.pop("volumes")
        if gateway_dir is not None:
            volumes[str(gateway_dir)] = {"bind": GATEWAY_MOUNT, "mode": "ro"}
        host_config = api.create_host_config(binds=volumes, **{key: opts.pop(key) for key in HOST_CONFIG_KEYS})
        return api.create_container(
            opts.pop("image"), command, name=f"openended-{self.spec.campaign_label}-{uuid.uuid4().hex[:8]}",
            volumes=[v["bind"] for v in volumes.values()], host_config=host_config,
            stdin_open=True, detach=False, **opts,
        )["Id"]

    def _launch(self) -> Serving:
        """A started serving container, attached before the start so that no output is lost."""
        gateway_dir = None
        if self.spec.gateway:  # a folder of this container's own: an evaluation's socket is linked into it
            gateway_dir = self.root / f"gateway-{uuid.uuid4().hex[:12]}"
            gateway_dir.mkdir(mode=0o755)
        container_id = self._create(serve_command(niceness()), gateway_dir)
        try:
            channel = Channel(self.api.api, container_id)
            self.api.api.start(container_id)
        except BaseException:
            self._remove_later(container_id, None, gateway_dir)
            raise
        return Serving(container_id, channel, gateway_dir)

    def _prepare(self) -> None:
        """Start the next container in the background, unless one is current or on its way."""
        if self._container is None and self._next is None:
            self._next = self._background.submit(self._launch)

    def _take(self) -> Serving:
        """The container for this evaluation: the current one, else the prepared one, else a new one."""
        current = self._container
        if current is not None and (current.uses >= self._max_uses or current.channel.ended()):
            self._retire()  # worn out, or stopped between evaluations (swept at a campaign's end, killed)
        if self._container is None:
            prepared, self._next = self._next, None
            try:
                self._container = prepared.result() if prepared is not None else None
            except Exception:  # launched again below, where its error is this evaluation's
                self._container = None
            if self._container is None:
                self._container = self._launch()
        return self._container

    def _retire(self) -> None:
        if self._container is not None:
            self._remove_later(self._container.id, self._container.channel, self._container.gateway_dir)
            self._container = None

    def _remove_later(self, container_id: str, channel: Channel | None, gateway_dir: Path | None = None) -> None:
        """Kill and remove a container in the background, off the evaluation's critical path.
        close() waits for these; sweep() catches any that a dead worker left."""
        def remove() -> None:
            try:
                self.api.api.remove_container(container_id, force=True)
            except Exception:  # already gone
                pass
            if channel is not None:
                channel.close()
            if gateway_dir is not None:
                shutil.rmtree(gateway_dir, ignore_errors=True)

        self._background.submit(remove)

    def _ended_state(self, container_id: str) -> dict | None:
        """The State of a container whose stream ended, once it has stopped; None when it is gone."""
        import docker

        deadline = time.monotonic() + 5
        while True:
            try:
                state = self.api.api.inspect_container(container_id).get("State") or {}
            except docker.errors.NotFound:
                return None
            if not state.get("Running") or time.monotonic() > deadline:
                return state
            time.sleep(0.01)

    # ------------------------------------------------------------ evaluation
    def _run(self, job: str, wall: float, started: float, *, retry: bool = True,
             gateway: str | None = None) -> EvalOutcome:
        serving = self._take()
        if gateway is None:
            return self._exchange(serving, job, wall, started, retry, None)
        if serving.gateway_dir is None:
            raise RuntimeError("this sandbox's containers have no gateway folder (SandboxSpec.gateway is false)")
        link = serving.gateway_dir / GATEWAY_SOCKET
        link.unlink(missing_ok=True)
        try:
            os.link(gateway, link)  # the same socket inode, reachable only from this container
        except OSError as exc:
            raise RuntimeError(f"cannot link the gateway socket into the container's folder ({exc.strerror}); "
                               "the gateway's socket folder must be on the temporary folder's filesystem") from None
        try:
            return self._exchange(serving, job, wall, started, retry, gateway)
        finally:
            link.unlink(missing_ok=True)

    def _exchange(self, serving: Serving, job: str, wall: float, started: float, retry: bool,
                  gateway: str | None) -> EvalOutcome:
        serving.uses += 1
        try:
            serving.channel.send(job)
            if serving.uses >= self._max_uses:
                serving.channel.end_input()  # its last job: the runner exits after it, whatever comes
            line = serving.channel.read_line(started + wall)
        except TimeoutError:
            self._retire()  # the hard kill: the evaluation dies with its container
            return self._timed_out(started)
        except ContainerGone:
            self._container = None
            state = self._ended_state(serving.id)
            self._remove_later(serving.id, serving.channel, serving.gateway_dir)
            if state is None and retry:  # removed under us (a sweep), which no child can do: once more
                return self._run(job, wall, started, retry=False, gateway=gateway)
            return self._runner_died(state, serving.channel.stderr_tail, started)
        outcome = parse_report(line, serving.channel.stderr_tail, None, time.monotonic() - started, job=job)
        if outcome.failure_kind is not None or outcome.retire or serving.uses >= self._max_uses:
            self._retire()  # a failed child may have left anything behind; the runner says when a good one did
        return outcome

    def _timed_out(self, started: float) -> EvalOutcome:
        return EvalOutcome.failed(FailureKind.TIMEOUT,
                                  f"no result within {self.spec.limits.timeout_s:g}s; container killed",
                                  seconds=time.monotonic() - started)

    def _runner_died(self, state: dict | None, stderr: bytes, started: float) -> EvalOutcome:
        """The outcome when the runner gave no report: its container was OOM-killed, or it failed."""
        state = state or {}
        outcome = parse_report(b"", stderr, state.get("ExitCode"), time.monotonic() - started)
        if state.get("OOMKilled"):
            outcome.failure_kind, outcome.reason = FailureKind.OOM, "out of memory: the container was OOM-killed"
        return outcome

    # ------------------------------------------------------------------ API
    def evaluate(self, agents: Sequence[Files], args: EvalArgs, *, gateway: str | None = None) -> EvalOutcome:
        limits = self.spec.limits
        problem = gateway_problem(agents, gateway)
        if problem is None and gateway is not None and not self.spec.gateway:
            problem = "this sandbox was not made for the model gateway (SandboxSpec.gateway is false)"
        if problem:
            return EvalOutcome.failed(FailureKind.SANDBOX_ERROR, problem)
        if not self.task.exists():  # first use, or after close()
            self.agents.mkdir(parents=True, exist_ok=True)
            copy_task(self.task_root, self.task, self.spec.hidden)
        job_dir = write_job(self.agents, agents, task_dir="/task", args=args, limits=limits, work_root="/work",
                            model_socket=None if gateway is None else f"{GATEWAY_MOUNT}/{GATEWAY_SOCKET}")
        job = f"/agents/{job_dir.name}"
        started = time.monotonic()
        try:
            outcome = self._run(job, limits.timeout_s + KILL_MARGIN_S, started, gateway=gateway)
        except Exception as exc:  # the engine failed, not the child
            self._retire()
            outcome = EvalOutcome.failed(FailureKind.SANDBOX_ERROR, f"docker: {type(exc).__name__}: {str(exc)[:300]}",
                                         seconds=time.monotonic() - started)
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        self._prepare()
        return outcome

    def close(self) -> None:
        """Remove this sandbox's containers (waiting until they are gone) and its job folders."""
        self._retire()
        prepared, self._next = self._next, None
        if prepared is not None:
            try:
                serving = prepared.result(timeout=120)
                self._remove_later(serving.id, serving.channel, serving.gateway_dir)
            except Exception:  # it never started; sweep() removes what is left
                pass
        self._background.shutdown(wait=True)
        self._background = _executor()  # still usable: a later evaluation starts a new container
        shutil.rmtree(self.root, ignore_errors=True)
