"""Run an agent's code in a process of its own, for a task's evaluator (``evaluate.py``).

The rule for task authors: untrusted agent code never runs in the evaluator's process. The
evaluator writes the result that the runner reports; code that runs beside it could write that
result itself, exit early, or patch the evaluator through its frames. So the evaluator starts
the agent with :func:`run_agent` and calls its functions across a pipe; every reply is
hostile data that is decoded, never executed.

    from sandboxes.agent import AgentError, run_agent

    with run_agent(files, "priority.py", timeout_s=20) as agent:
        priority = agent.function("priority")   # AgentError if the agent defines no such callable
        scores = priority(item, bins)           # arguments and reply cross the pipe
    # on AgentError (load failure, exception, timeout, death, bad reply): the agent is invalid

API (standard library only; numpy is imported only to encode or decode an array):

- ``run_agent(files, module, *, timeout_s, memory_mb=None, guard=<auto>, same_cpu=True) -> Agent``: writes
  ``files`` (relative path -> bytes) into a fresh private folder and starts a fresh interpreter
  (``python -I -c <source>``, exec'd, not forked: it holds none of the evaluator's memory) in
  a session of its own, with only its two pipes open, stdin/stdout/stderr on /dev/null (its
  prints never reach the evaluator's output), the environment ``HOME``/``TMPDIR`` = its folder,
  ``PATH=/usr/bin:/bin`` and one BLAS thread (and ``OPENENDED_MODEL_SOCKET`` when the evaluation has the
  model gateway: the agent can ``import sandboxes.model``), its folder as working folder and first on
  ``sys.path``, ``RLIMIT_AS`` = ``memory_mb`` when given, and no core dumps. It compiles and
  executes ``module`` there in a fresh namespace (``__name__ == "agent"``) and waits until it is
  loaded. ``timeout_s`` is the agent's whole wall-clock budget: starting and loading, then the
  time spent waiting on every call. With ``same_cpu`` the agent and the calling thread share one
  CPU until close (a call is a hand-over: across CPUs each costs a wake-up, 2-4x slower on virtual
  machines). Use the agent as a context manager, or call ``close()``.
- ``Agent.function(name)``: a callable proxy; calling it sends the arguments and returns the
  decoded reply. ``Agent.call(name, *args, **kwargs)`` does the same in one step.
  ``Agent.callables`` lists what the module defines; ``Agent.seconds_used`` the budget spent.
- ``Agent.close()``: kills the agent's process group and every process it started that can be
  found (its descendants: the agent process is their child subreaper), reaps it, checks the guard
  a last time and removes its folder. Idempotent; ``__exit__`` calls it, also when the evaluator
  raises. Should the evaluator die first, the agent gets SIGKILL (its parent-death signal; on
  Linux that follows the thread that called run_agent: keep the agent within that thread's life).
- ``AgentError(Exception)``: the agent is unusable; the message is its feedback: the module is
  missing, not UTF-8, does not parse (with the line), or raised while loading (type, message, the
  agent's innermost line); a call raised (same detail); the agent timed out
  (:class:`AgentTimeout`, a subclass); its process died (exit status or signal, e.g. after
  ``os._exit(0)``); its reply is malformed or too large, or holds a value that cannot be sent.
  After an AgentError other than a raised call, the agent's process is gone: later calls raise too.
- ``ForgedResult(BaseException)``: the agent changed what is not its own (see the guard). A
  BaseException, so that an evaluator's ``except Exception`` cannot swallow it: it ends
  ``evaluate_batch``, and the runner fails the evaluation with stage ``invalid``, kind
  ``forged_result``.
- ``encode(value) -> bytes`` / ``decode(frame) -> value`` (raises only :class:`WireError`): the
  wire format, public for tests.

The guard, and the rule it implies (see :mod:`sandboxes.guard`). By default run_agent guards the
runner's working folder for the evaluation when it recognises it (the current directory is
``$TMPDIR``); ``guard=PATH`` guards another folder, ``guard=None`` none. A file or folder there
changed, added or removed after any call, failed calls included, or at close, raises
ForgedResult naming it. Hence, for task authors: **while an agent is open, the evaluator itself
changes nothing in its working folder** (write what you need before ``run_agent`` or after the
``with`` block, or keep it in memory), and opens one agent at a time (changes between two
agents' own folders are not checked). Agents' folders are made in the guarded folder, else in
the temporary folder.

Where the parts live: the wire format in :mod:`sandboxes.wire` (re-exported here), the guard in
:mod:`sandboxes.guard`, killing the agent's processes and removing its folder in
:mod:`sandboxes.reaper`, the agent's side (the server its interpreter runs, and the ``-c`` source
that registers it there from its text) in :mod:`sandboxes.agent_server`. Inside the sandbox the
runner registers all of them (``openended.sandbox.jobdir.IN_SANDBOX_MODULES``).

Known limits: a process the agent started that left the agent's session and whose parents are
gone (the agent can undo its subreaper setting) is not found on close; the sandbox container's
runner kills every process between jobs. The agent runs as the evaluator's user: it can send the
evaluator signals (which fails the evaluation, it cannot forge a result), and it could read the
evaluator's memory if the evaluator were dumpable (the runner makes itself and the evaluator
non-dumpable).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from typing import Any

try:  # registered by the runner (inside the sandbox), or the installed package
    from sandboxes.agent_server import SERVER_FLAG, serve, server_source
except ModuleNotFoundError as _missing:  # this file loaded alone (spec_from_file_location): the package beside it
    if _missing.name != "sandboxes" or not globals().get("__file__"):
        raise
    import types

    sys.modules["sandboxes"] = types.ModuleType("sandboxes")
    sys.modules["sandboxes"].__path__ = [os.path.dirname(os.path.abspath(__file__))]
    from sandboxes.agent_server import SERVER_FLAG, serve, server_source
from sandboxes.guard import folder_id, forget_folder, make_folder, snapshot, tampered
from sandboxes.reaper import kill_all, remove_tree
from sandboxes.wire import MAX_DEPTH, MAX_FRAME_BYTES, U32, WireError, decode, decode_payload, encode

MODEL_SOCKET_ENV = "OPENENDED_MODEL_SOCKET"  # the gateway's socket (sandboxes.model), passed on to the agent

__all__ = ["MAX_DEPTH", "MAX_FRAME_BYTES", "Agent", "AgentError", "AgentTimeout", "ForgedResult",
           "WireError", "decode", "encode", "exit_in_words", "run_agent"]

MAX_TEXT = 2000  # longest feedback text taken from the agent
_POLL_S = 0.1  # while waiting on a reply: how often to check that the agent process still lives


def exit_in_words(status: int) -> str:
    """A process's exit status (``Popen.returncode``) in words: "exited with status 3", "was killed by SIGSEGV"."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


class AgentError(Exception):
    """The agent is unusable; the message is its feedback."""


class AgentTimeout(AgentError):
    """The agent used up its wall-clock budget; its processes were killed."""


class ForgedResult(BaseException):  # noqa: N818 - named for the failure kind forged_result
    """The agent changed a file or folder of the evaluator's (outside its own folder)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


# --- the evaluator's side ---------------------------------------------------------------------

_AUTO = object()


def _cap(text, limit: int = MAX_TEXT) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_path(name: str) -> list[str]:
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise AgentError(f"file name {name!r} is not a plain relative path")
    return parts


class _Function:
    """A callable proxy of one of the agent's functions."""

    def __init__(self, agent: Agent, name: str):
        self._agent, self.__name__ = agent, name

    def __call__(self, *args, **kwargs):
        return self._agent.call(self.__name__, *args, **kwargs)

    def __repr__(self):
        return f"<agent function {self.__name__}>"


class Agent:
    """An agent's code loaded in a process of its own; made by :func:`run_agent`."""

    def __init__(self, files: dict, module: str, timeout_s: float, memory_mb: int | None, guard,
                 same_cpu: bool = True):
        self.module = module
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.callables: list[str] = []
        self.seconds_used = 0.0
        self.pid = 0  # the agent process, once started
        self.folder = ""  # its private folder, once made
        self._files = files
        self._guard = guard
        self._baseline: dict | None = None
        self._proc: Any = None  # the subprocess.Popen
        self._req = self._rep = -1
        self._buf = bytearray()
        self._seq = 0
        self._dead: str | None = None  # why the agent can take no more calls
        self._reaped = False
        self._closed = False
        self._same_cpu = same_cpu
        self._affinity: tuple | None = None

    # -- life cycle

    def _start(self) -> None:
        if self.module not in self._files:
            raise AgentError(f"genome has no {self.module} (files: {sorted(self._files) or 'none'})")
        for name, data in self._files.items():
            _check_path(name)
            if name == self.module:
                try:
                    (data if isinstance(data, str) else bytes(data).decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise AgentError(f"{self.module} is not UTF-8 text: {exc}") from None
        import subprocess

        guard = self._guard
        if guard is _AUTO:
            tmp = os.environ.get("TMPDIR")
            cwd = os.getcwd()
            guard = cwd if tmp and os.path.realpath(tmp) == os.path.realpath(cwd) else None
        self._guard = None if guard is None else os.path.realpath(os.fspath(guard))
        self.folder = make_folder(self._guard)
        for name, data in self._files.items():
            path = os.path.join(self.folder, *_check_path(name))
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "xb") as fh:
                    fh.write(data.encode() if isinstance(data, str) else data)
            except OSError as exc:  # e.g. both "a" and "a/b"
                raise AgentError(f"the agent's file {name!r} cannot be written: {exc.strerror}") from None
        self._folder_id = folder_id(self.folder)
        if self._guard is not None:
            self._baseline = snapshot(self._guard)
        req_r, self._req = os.pipe()
        self._rep, rep_w = os.pipe()
        env = {"HOME": self.folder, "TMPDIR": self.folder, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
        model_socket = os.environ.get(MODEL_SOCKET_ENV)
        if model_socket:  # the evaluation may call a model: so may its agent (sandboxes.model)
            env[MODEL_SOCKET_ENV] = model_socket
        argv = [sys.executable, "-I", "-c", server_source(model=bool(model_socket)), SERVER_FLAG, str(req_r),
                str(rep_w), self.module, str(int(self.memory_mb or 0)), str(os.getpid())]
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, close_fds=True, pass_fds=(req_r, rep_w),
                                          cwd=self.folder, env=env, start_new_session=True)
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.pid = self._proc.pid
        os.set_blocking(self._req, False)
        self._poll_in, self._poll_out = select.poll(), select.poll()
        self._poll_in.register(self._rep, select.POLLIN)
        self._poll_out.register(self._req, select.POLLOUT)
        if self._same_cpu:
            self._colocate()
        try:
            reply = self._receive(started, f"while loading {self.module}")
        finally:
            self.seconds_used += time.monotonic() - started
            self._check_guard()
        if type(reply) is list and len(reply) == 4 and reply[:3] == ["error", 0, "load"]:
            self._kill(f"it failed to load earlier: {_cap(reply[3], 300)}")
            raise AgentError(_cap(reply[3]))
        if (type(reply) is not list or len(reply) != 3 or reply[:2] != ["ready", 0] or type(reply[2]) is not list
                or not all(type(n) is str for n in reply[2])):
            self._kill("its reply was malformed earlier")
            raise AgentError(f"the agent's process sent a malformed first message while loading {self.module}")
        self.callables = [_cap(n, 100) for n in reply[2][:1000]]

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if isinstance(exc, ForgedResult):
            try:
                self.close()
            except ForgedResult:
                pass
            return
        self.close()

    def close(self) -> None:
        """Kill the agent's processes, check the guard a last time, remove its folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._kill("it was closed")
            if self._affinity is not None:
                tid, allowed = self._affinity
                self._affinity = None
                try:
                    os.sched_setaffinity(0 if tid == threading.get_native_id() else tid, allowed)
                except OSError:
                    pass
            for fd in (self._req, self._rep):
                if fd >= 0:
                    os.close(fd)
            self._req = self._rep = -1
            self._check_guard()
        finally:
            if self.folder:
                removed = remove_tree(self.folder)
                if removed:  # a folder that cannot be removed stays out of every guard
                    forget_folder(self.folder)

    def _colocate(self) -> None:
        """Run the agent on the CPU of the calling thread, and keep that thread there while it lives.

        A call hands control back and forth; on two CPUs every hand-over is a cross-CPU wake-up,
        several times slower on virtual machines. The thread's CPU set is restored on close."""
        if not hasattr(os, "sched_setaffinity"):
            return
        try:
            allowed = os.sched_getaffinity(0)
            with open("/proc/thread-self/stat", "rb") as fh:
                cpu = int(fh.read().rsplit(b")", 1)[1].split()[36])
            if cpu not in allowed:
                cpu = min(allowed)
            if len(allowed) > 1:
                os.sched_setaffinity(0, {cpu})
                self._affinity = (threading.get_native_id(), allowed)
            os.sched_setaffinity(self._proc.pid, {cpu})
        except (OSError, ValueError, IndexError):
            pass

    def _alive(self) -> bool:
        """Whether the agent's process has not exited (it is not reaped here: its pid stays its own)."""
        try:
            return os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def _kill(self, why: str) -> None:
        """Kill the agent's process group and descendants and reap it; later calls fail with ``why``."""
        if self._dead is None:
            self._dead = why
        proc = self._proc
        if proc is None or self._reaped:
            return
        kill_all(proc.pid)  # not reaped yet: the group is still the agent's
        try:
            proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a process stuck in the kernel: nothing more to do
            pass
        self._reaped = True

    # -- calls

    def function(self, name: str) -> _Function:
        """A callable proxy of the agent's ``name``; AgentError if the module defines no such callable."""
        if name not in self.callables:
            raise AgentError(f"{self.module} defines no function {name!r} "
                             f"(callables defined: {self.callables or 'none'})")
        return _Function(self, name)

    def call(self, name: str, *args, **kwargs):
        """Call the agent's ``name`` with these arguments; its decoded reply."""
        if self._closed or self._dead is not None:
            raise AgentError(f"the agent cannot take calls: {self._dead or 'it was closed'}")
        self._seq += 1
        seq = self._seq
        frame = encode(["call", seq, name, list(args), kwargs])  # the evaluator's data: a WireError is its bug
        started = time.monotonic()
        try:
            self._send(frame, started, f"during {name}()")
            reply = self._receive(started, f"during {name}()")
        finally:
            self.seconds_used += time.monotonic() - started
            self._check_guard()
        if type(reply) is list and len(reply) == 3 and reply[0] == "ok" and reply[1] == seq:
            return reply[2]
        if type(reply) is list and len(reply) == 4 and reply[0] == "error" and reply[1] == seq:
            kind, text = reply[2], _cap(reply[3])
            if kind == "raised":
                raise AgentError(f"{name} raised {text}")
            if kind == "unsendable":
                raise AgentError(f"{name} returned a value that cannot be sent back: {text}")
            if kind == "no_function":
                raise AgentError(f"{self.module} defines no function {name!r}")
        self._kill("its reply was malformed earlier")
        raise AgentError(f"the agent's process sent a malformed reply during {name}()")

    def _remaining(self, started: float) -> float:
        return self.timeout_s - self.seconds_used - (time.monotonic() - started)

    def _timed_out(self, doing: str):
        self._kill("it timed out earlier")
        return AgentTimeout(f"timed out {doing}: the agent used up its {self.timeout_s:g}s time budget")

    def _died(self, doing: str):
        deadline = time.monotonic() + 1.0
        while self._alive() and time.monotonic() < deadline:  # the pipe closes just before it exits
            time.sleep(0.001)
        exited = not self._alive()
        self._kill("its process died earlier")
        status = self._proc.returncode if exited else None
        if status is None:
            return AgentError(f"the agent's process closed its reply channel {doing}")
        how = exit_in_words(status) + (" (most likely out of memory)" if status == -signal.SIGKILL else "")
        return AgentError(f"the agent's process died {doing}: it {how}")

    def _send(self, frame: bytes, started: float, doing: str) -> None:
        view = memoryview(frame)
        while view:
            try:
                written = os.write(self._req, view)
                if written == len(view):
                    return
                view = view[written:]
                continue
            except BlockingIOError:
                pass
            except OSError:  # BrokenPipeError: the agent's end is closed
                raise self._died(doing) from None
            remaining = self._remaining(started)
            if remaining <= 0:
                raise self._timed_out(doing)
            self._poll_out.poll(min(remaining, _POLL_S) * 1000)
            if not self._alive():
                raise self._died(doing)

    def _read_some(self, want: int, started: float, doing: str) -> None:
        while True:
            remaining = self._remaining(started)
            if remaining <= 0:
                raise self._timed_out(doing)
            if self._poll_in.poll(min(remaining, _POLL_S) * 1000):
                chunk = os.read(self._rep, max(want, 65536))
                if not chunk:
                    raise self._died(doing)
                self._buf += chunk
                return
            if not self._alive():
                raise self._died(doing)

    def _receive(self, started: float, doing: str):
        """The next frame from the agent, decoded; AgentError on timeout, death or a bad frame."""
        while len(self._buf) < 4:
            self._read_some(4 - len(self._buf), started, doing)
        (size,) = U32.unpack_from(self._buf, 0)
        if size > MAX_FRAME_BYTES:
            self._kill("its reply was too large earlier")
            raise AgentError(f"the agent's reply {doing} is {size} bytes (at most {MAX_FRAME_BYTES})")
        while len(self._buf) < 4 + size:
            self._read_some(4 + size - len(self._buf), started, doing)
        payload = self._buf[4:4 + size]
        del self._buf[:4 + size]
        try:
            return decode_payload(payload)
        except WireError as exc:
            self._kill("its reply was malformed earlier")
            raise AgentError(f"the agent's reply {doing} is malformed: {exc}") from None

    def _check_guard(self) -> None:
        if self._baseline is None:
            return
        found = tampered(self._baseline, self._guard, self.folder, self._folder_id)
        if found:
            self._kill("it tampered with the evaluator's files")
            raise ForgedResult(*found)


def run_agent(files: dict, module: str, *, timeout_s: float, memory_mb: int | None = None, guard=_AUTO,
              same_cpu: bool = True) -> Agent:
    """Start the agent made of ``files`` and load its ``module``; a started :class:`Agent`.

    Args:
        files: relative path -> bytes: the agent's files, written into its private folder.
        module: the file to load (e.g. ``"priority.py"``); it may import the others.
        timeout_s: the agent's whole wall-clock budget (start, load and every call).
        memory_mb: its address-space limit (``RLIMIT_AS``), if any.
        guard: the folder it must not change (see the module docstring); by default the current
            directory when the runner made it (it is ``$TMPDIR``), else none.
        same_cpu: run the agent on the calling thread's CPU and keep the thread there until close
            (calls are 2-4x faster than across CPUs); False leaves both to the scheduler.

    Raises:
        AgentError: the agent cannot be loaded (missing, not UTF-8, syntax error, exception,
            timeout, death): the message is its feedback.
        ForgedResult: it changed the guarded folder while loading.
    """
    agent = Agent(files, module, timeout_s, memory_mb, guard, same_cpu)
    try:
        agent._start()
    except BaseException:
        agent.close()
        raise
    return agent


if __name__ == "__main__":
    if sys.argv[1:2] == [SERVER_FLAG]:
        sys.exit(serve(sys.argv[2:]))
    print(__doc__)
