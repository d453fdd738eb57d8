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
  (``python -I -c <this file>``, exec'd, not forked: it holds none of the evaluator's memory) in
  a session of its own, with only its two pipes open, stdin/stdout/stderr on /dev/null (its
  prints never reach the evaluator's output), the environment ``HOME``/``TMPDIR`` = its folder,
  ``PATH=/usr/bin:/bin`` and one BLAS thread, its folder as working folder and first on
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

The guard, and the rule it implies. The runner gives each evaluation a fresh private working
folder (its current directory, also its ``$TMPDIR``), where it later reads the result file. By
default run_agent guards that folder when it recognises it (the current directory is
``$TMPDIR``); ``guard=PATH`` guards another folder, ``guard=None`` none. When the agent starts it
records every entry of the guarded tree outside the folders of the agents alive in this process
(path, type and mode, inode, size, mtime_ns and ctime_ns) and compares after every call, failed
calls included, and at close, after the agent's processes are dead: a file or folder changed,
added or removed raises ForgedResult naming it. Hence, for task authors: **while an agent is
open, the evaluator itself changes nothing in its working folder** (write what you need before
``run_agent`` or after the ``with`` block, or keep it in memory), and opens one agent at a time
(changes between two agents' own folders are not checked). Agents' folders are made in the
guarded folder, else in the temporary folder.

Wire format. Each message is one frame: ``u32 n`` (little-endian) then ``n`` bytes: ``u32 m``, a
UTF-8 JSON document of ``m`` bytes, then the arrays' raw bytes one after another. The document is
``[value, [[dtype, shape], ...]]``: the value holds None, bool, int, float (NaN and infinities
included), str, list (tuples are sent as lists) and dict with str keys; an array is
``{"\\u0000": i}``, the i-th entry of the list (each used once, in order; the key "\\x00" is
reserved). Arrays are C-ordered, little-endian, of dtype bool, int8..int64, uint8..uint64 or
float16..float64 (numpy scalars are sent as Python numbers); they arrive as fresh writable
arrays. Limits: a frame at most :data:`MAX_FRAME_BYTES` (16 MiB), nesting at most
:data:`MAX_DEPTH` (64) levels, at most 32 dimensions. No pickle or marshal: decoding runs
``json.loads`` and ``numpy.frombuffer`` and nothing of the sender's.

Known limits: a process the agent started that left the agent's session and whose parents are
gone (the agent can undo its subreaper setting) is not found on close; the sandbox container's
runner kills every process between jobs. The agent runs as the evaluator's user: it can send the
evaluator signals (which fails the evaluation, it cannot forge a result), and it could read the
evaluator's memory if the evaluator were dumpable (the runner makes itself and the evaluator
non-dumpable).
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import struct
import sys
import threading
import time
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_FRAME_BYTES", "Agent", "AgentError", "AgentTimeout", "ForgedResult",
           "WireError", "decode", "encode", "run_agent"]

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_NDIM = 32
MAX_TEXT = 2000  # longest feedback text taken from the agent
MARK = "\x00"
_U32 = struct.Struct("<I")
_DTYPE_CACHE: dict = {}
_SCALARS = frozenset([type(None), bool, int, float, str])
_DTYPES = frozenset(["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"])
_JSON = json.JSONEncoder(allow_nan=True, separators=(",", ":"))
try:  # the C encoder itself: JSONEncoder.encode makes a new one for every message
    from json.encoder import c_make_encoder, encode_basestring_ascii

    _C_JSON = c_make_encoder(None, None, encode_basestring_ascii, None, ":", ",", False, False, True)
except (ImportError, TypeError):
    _C_JSON = None


def _json_text(doc) -> str:
    """``doc`` (JSON types only, no cycles: _prepare made it) as compact ASCII JSON with NaN and infinities."""
    return "".join(_C_JSON(doc, 0)) if _C_JSON is not None else _JSON.encode(doc)
_SERVER_FLAG = "--agent-server"
_POLL_S = 0.1  # while waiting on a reply: how often to check that the agent process still lives


class AgentError(Exception):
    """The agent is unusable; the message is its feedback."""


class AgentTimeout(AgentError):
    """The agent used up its wall-clock budget; its processes were killed."""


class ForgedResult(BaseException):  # noqa: N818 - named for the failure kind forged_result
    """The agent changed a file or folder of the evaluator's (outside its own folder)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


class WireError(ValueError):
    """A value that cannot be encoded, or bytes that are not a valid frame."""


# --- wire format ------------------------------------------------------------------------------


def _numpy():
    import numpy

    return numpy


def _prepare(obj, arrays: list, depth: int):
    """``obj`` as a JSON-ready value; arrays are replaced by markers and appended to ``arrays``."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is list or kind is tuple:
        return [x if type(x) in _SCALARS else _prepare(x, arrays, depth + 1) for x in obj]
    if kind is dict:
        out = {}
        for key, value in obj.items():
            if type(key) is not str:
                raise WireError(f"dict keys must be str, got {type(key).__name__}")
            if key == MARK:
                raise WireError("the dict key '\\x00' is reserved")
            out[key] = value if type(value) in _SCALARS else _prepare(value, arrays, depth + 1)
        return out
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        dtype = obj.dtype
        if dtype.str not in _DTYPES and (dtype.kind not in "biuf" or dtype.newbyteorder("<").str not in _DTYPES):
            raise WireError(f"cannot send an array of dtype {obj.dtype} (bool, int, uint or float up to 64 bits)")
        if obj.ndim > MAX_NDIM:
            raise WireError(f"cannot send an array of {obj.ndim} dimensions (at most {MAX_NDIM})")
        arrays.append(obj)
        return {MARK: len(arrays) - 1}
    if np is not None and isinstance(obj, np.generic):
        if obj.dtype.kind in "biuf":
            return obj.item()
        if isinstance(obj, str):
            return str(obj)
        raise WireError(f"cannot send a numpy {type(obj).__name__}")
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [_prepare(x, arrays, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return _prepare(dict(obj.items()), arrays, depth)
    raise WireError(f"cannot send a {type(obj).__name__} (None, bool, int, float, str, list, dict "
                    f"or a numpy array of numbers)")


def encode(value) -> bytes:
    """One frame holding ``value``; WireError if it holds what cannot be sent or is too large."""
    arrays: list = []
    try:
        doc = _prepare(value, arrays, 0)
        meta = []
        blobs = []
        for a in arrays:
            if a.dtype.str not in _DTYPES:
                a = a.astype(a.dtype.newbyteorder("<"))
            meta.append([a.dtype.str, list(a.shape)])
            blobs.append(a.tobytes())
        text = _json_text([doc, meta]).encode()
    except WireError:
        raise
    except RecursionError:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # noqa: BLE001 - e.g. an int too large for JSON
        raise WireError(f"cannot encode: {type(exc).__name__}: {exc}"[:300]) from None
    size = 4 + len(text) + sum(len(b) for b in blobs)
    if size > MAX_FRAME_BYTES:
        raise WireError(f"the message is {size} bytes (at most {MAX_FRAME_BYTES})")
    return b"".join([_U32.pack(size), _U32.pack(len(text)), text, *blobs])


def _restore(value, arrays: list, used: list, depth: int):
    """Check the decoded document's depth and put the arrays in place of their markers."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind is list:
        for i, item in enumerate(value):
            if type(item) is list or type(item) is dict:
                value[i] = _restore(item, arrays, used, depth + 1)
        return value
    if kind is dict:
        if MARK in value:
            index = value[MARK]
            if len(value) != 1 or type(index) is not int or index != used[0] or index >= len(arrays):
                raise WireError("malformed array marker")
            used[0] += 1
            return arrays[index]
        for key, item in value.items():
            if type(item) is list or type(item) is dict:
                value[key] = _restore(item, arrays, used, depth + 1)
        return value
    return value


def _arrays(meta, payload, offset: int) -> list:
    if type(meta) is not list:
        raise WireError("malformed array list")
    if not meta:
        if offset != len(payload):
            raise WireError(f"{len(payload) - offset} bytes after the document")
        return []
    np = _numpy()
    arrays = []
    for entry in meta:
        if type(entry) is not list or len(entry) != 2 or entry[0] not in _DTYPES or type(entry[1]) is not list:
            raise WireError("malformed array description")
        dtype, shape = _DTYPE_CACHE.get(entry[0]) or _DTYPE_CACHE.setdefault(entry[0], np.dtype(entry[0])), entry[1]
        if len(shape) > MAX_NDIM:
            raise WireError(f"an array of {len(shape)} dimensions (at most {MAX_NDIM})")
        count = 1
        for d in shape:
            if type(d) is not int or not 0 <= d <= MAX_FRAME_BYTES:
                raise WireError(f"bad array shape {shape!r}"[:200])
            count *= d
        nbytes = count * dtype.itemsize
        if nbytes > len(payload) - offset:
            raise WireError("array data runs past the end of the frame")
        arrays.append(np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += nbytes
    if offset != len(payload):
        raise WireError(f"{len(payload) - offset} bytes after the arrays")
    return arrays


def _decode_payload(payload: bytearray):
    """The value of a frame's payload (what follows its length); WireError on anything else."""
    try:
        if len(payload) < 4:
            raise WireError("frame too short")
        (size,) = _U32.unpack_from(payload, 0)
        if size > len(payload) - 4:
            raise WireError("document runs past the end of the frame")
        doc = json.loads(str(memoryview(payload)[4:4 + size], "utf-8"))
        if type(doc) is not list or len(doc) != 2:
            raise WireError("the document is not [value, arrays]")
        value, meta = doc
        arrays = _arrays(meta, payload, 4 + size)
        used = [0]
        if type(value) is list or type(value) is dict:
            value = _restore(value, arrays, used, 0)
        if used[0] != len(arrays):
            raise WireError("an array is not placed in the value")
        return value
    except WireError:
        raise
    except RecursionError:
        raise WireError("nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes: any failure is a wire error
        raise WireError(f"undecodable frame: {type(exc).__name__}: {exc}"[:300]) from None


def decode(frame) -> Any:
    """The value of one whole frame (bytes); WireError if it is not a valid frame."""
    data = bytearray(frame)
    if len(data) < 4:
        raise WireError("frame too short")
    (size,) = _U32.unpack_from(data, 0)
    if size > MAX_FRAME_BYTES:
        raise WireError(f"frame of {size} bytes (at most {MAX_FRAME_BYTES})")
    if size != len(data) - 4:
        raise WireError(f"frame length {size} does not match its {len(data) - 4} bytes")
    return _decode_payload(data[4:])


# --- the evaluator's side ---------------------------------------------------------------------

_AUTO = object()
_LIVE_FOLDERS: set[str] = set()  # folders of the agents alive in this process: no guard looks inside
_LIVE_LOCK = threading.Lock()
_SOURCE: str | None = globals().get("__source__")


def _own_source() -> str:
    global _SOURCE
    if _SOURCE is None:
        with open(__file__, encoding="utf-8") as fh:
            _SOURCE = fh.read()
    return _SOURCE


def _cap(text, limit: int = MAX_TEXT) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _entry(st) -> tuple:
    return (stat.S_IFMT(st.st_mode), st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _snapshot(root: str) -> dict:
    """Every entry under ``root`` (not following links), outside the live agents' folders."""
    with _LIVE_LOCK:
        skip = set(_LIVE_FOLDERS)
    out: dict = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            out[folder] = ("unreadable", exc.errno)
            continue
        for e in entries:
            path = e.path
            if path in skip:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:
                out[path] = ("unreadable", exc.errno)
                continue
            out[path] = _entry(st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    return out


def _difference(before: dict, after: dict) -> tuple[str, str] | None:
    if before == after:
        return None
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            return path, "added"
        if new is None:
            return path, "removed"
        if old[0] != new[0]:
            return path, "replaced"
        if "unreadable" in (old[0], new[0]):
            return path, "made unreadable"
        what = [name for name, i in (("mode", 1), ("inode", 2), ("size", 3), ("mtime", 4), ("ctime", 5))
                if old[i] != new[i]]
        return path, "changed (" + ", ".join(what) + ")"
    return None


def _check_path(name: str) -> list[str]:
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise AgentError(f"file name {name!r} is not a plain relative path")
    return parts


def _remove_tree(folder: str) -> bool:
    """Remove ``folder`` even where the agent took away permissions; whether it is gone."""
    import shutil

    def retry(func, path, _exc):  # only ever chmod what lies inside the folder, never a link
        try:
            parent = os.path.dirname(path)
            if parent == folder or parent.startswith(folder + os.sep):
                os.chmod(parent, 0o700)
            if os.path.isdir(path) and not os.path.islink(path) and path.startswith(folder + os.sep):
                os.chmod(path, 0o700)
            if func is not os.path.islink:
                func(path)
        except OSError:
            pass

    shutil.rmtree(folder, onerror=retry)
    if os.path.lexists(folder):
        shutil.rmtree(folder, ignore_errors=True)
    return not os.path.lexists(folder)


def _descendants(root_pid: int) -> set[int]:
    """The processes below ``root_pid`` and the members of its session (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    session: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, ppid, sid = int(name), int(fields[1]), int(fields[3])
        children.setdefault(ppid, []).append(pid)
        if sid == root_pid:
            session.add(pid)
    found, todo = set(), [root_pid, *session]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    found |= session
    found.discard(root_pid)
    found.discard(os.getpid())
    return found


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
        import tempfile

        guard = self._guard
        if guard is _AUTO:
            tmp = os.environ.get("TMPDIR")
            cwd = os.getcwd()
            guard = cwd if tmp and os.path.realpath(tmp) == os.path.realpath(cwd) else None
        self._guard = None if guard is None else os.path.realpath(os.fspath(guard))
        with _LIVE_LOCK:
            self.folder = os.path.realpath(tempfile.mkdtemp(prefix="agent-", dir=self._guard))
            _LIVE_FOLDERS.add(self.folder)
        for name, data in self._files.items():
            path = os.path.join(self.folder, *_check_path(name))
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "xb") as fh:
                    fh.write(data.encode() if isinstance(data, str) else data)
            except OSError as exc:  # e.g. both "a" and "a/b"
                raise AgentError(f"the agent's file {name!r} cannot be written: {exc.strerror}") from None
        folder_stat = os.lstat(self.folder)
        self._folder_id = (folder_stat.st_ino, stat.S_IFMT(folder_stat.st_mode))
        if self._guard is not None:
            self._baseline = _snapshot(self._guard)
        req_r, self._req = os.pipe()
        self._rep, rep_w = os.pipe()
        env = {"HOME": self.folder, "TMPDIR": self.folder, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
        argv = [sys.executable, "-I", "-c", _own_source(), _SERVER_FLAG, str(req_r), str(rep_w), self.module,
                str(int(self.memory_mb or 0)), str(os.getpid())]
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
                removed = _remove_tree(self.folder)
                if removed:  # a folder that cannot be removed stays out of every guard
                    with _LIVE_LOCK:
                        _LIVE_FOLDERS.discard(self.folder)

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
        for _round in range(3):  # again: a process may have forked meanwhile
            victims = _descendants(proc.pid) if sys.platform.startswith("linux") else set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group is still the agent's
            except OSError:
                pass
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if not victims:
                break
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
        if status < 0:
            try:
                sig = signal.Signals(-status).name
            except ValueError:
                sig = str(-status)
            how = f"was killed by signal {sig}" + (" (most likely out of memory)" if -status == signal.SIGKILL else "")
        else:
            how = f"exited with status {status}"
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
        (size,) = _U32.unpack_from(self._buf, 0)
        if size > MAX_FRAME_BYTES:
            self._kill("its reply was too large earlier")
            raise AgentError(f"the agent's reply {doing} is {size} bytes (at most {MAX_FRAME_BYTES})")
        while len(self._buf) < 4 + size:
            self._read_some(4 + size - len(self._buf), started, doing)
        payload = self._buf[4:4 + size]
        del self._buf[:4 + size]
        try:
            return _decode_payload(payload)
        except WireError as exc:
            self._kill("its reply was malformed earlier")
            raise AgentError(f"the agent's reply {doing} is malformed: {exc}") from None

    def _check_guard(self) -> None:
        if self._baseline is None:
            return
        if self.folder:
            try:
                st = os.lstat(self.folder)
                same = (st.st_ino, stat.S_IFMT(st.st_mode)) == self._folder_id
            except OSError:
                same = False
            if not same:
                self._kill("it tampered with the evaluator's files")
                raise ForgedResult(self.folder, f"the agent replaced its own folder {self.folder}")
        found = _difference(self._baseline, _snapshot(self._guard))
        if found:
            path, how = found
            self._kill("it tampered with the evaluator's files")
            raise ForgedResult(path, f"the agent changed the evaluator's files: {path} {how} (outside the "
                                     f"agent's own folder)")


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


# --- the agent's side (a fresh interpreter: python -I -c <this file> --agent-server ...) -------


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view):]


def _text(exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - the agent's own __str__
        message = "<unprintable>"
    return (f"{type(exc).__name__}: {message}" if message else type(exc).__name__)[:300]


def _describe(exc: BaseException, module: str, source: str, folder: str) -> str:
    """'ZeroDivisionError: division by zero at line 7: `return 1 / gap`' (the agent's innermost line)."""
    import linecache
    import traceback

    text = _text(exc)
    last = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name == module or name.startswith(folder + os.sep):
            last = name, lineno
    if last:
        name, lineno = last
        if name == module:
            lines = source.splitlines()
            line = lines[lineno - 1].strip() if lineno and 0 < lineno <= len(lines) else ""
            text += f" at line {lineno}"
        else:
            line = linecache.getline(name, lineno).strip() if lineno else ""
            text += f" at line {lineno} of {os.path.relpath(name, folder)}"
        text += f": `{line[:200]}`" if line else ""
    return text


def _harden(memory_mb: int, parent: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mb > 0:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the evaluator
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the agent stay below it
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the evaluator died before the death signal was armed
        os._exit(0)


def _serve(argv: list[str]) -> int:
    req, rep, module, memory_mb, parent = int(argv[0]), int(argv[1]), argv[2], int(argv[3]), int(argv[4])
    _harden(memory_mb, parent)
    sys.dont_write_bytecode = True
    folder = os.getcwd()
    sys.path.insert(0, folder)

    def send(value) -> None:
        _write_all(rep, encode(value))

    with open(module, "rb") as fh:
        source = fh.read().decode("utf-8")
    try:
        code = compile(source, module, "exec")
    except SyntaxError as exc:
        send(["error", 0, "load", f"{module} does not parse: line {exc.lineno}: {exc.msg}"])
        return 0
    except (ValueError, MemoryError, RecursionError) as exc:
        send(["error", 0, "load", f"{module} does not parse: {_text(exc)}"])
        return 0
    namespace = {"__name__": "agent", "__file__": module}
    try:
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - any failure at import is the agent's
        send(["error", 0, "load", f"{module} failed while loading: {_describe(exc, module, source, folder)}"])
        return 0
    send(["ready", 0, sorted(k for k, v in list(namespace.items()) if callable(v) and not k.startswith("__"))])
    buf = bytearray()
    while True:
        while len(buf) < 4 or len(buf) < 4 + _U32.unpack_from(buf, 0)[0]:
            chunk = os.read(req, 1 << 16)
            if not chunk:
                return 0
            buf += chunk
        size = _U32.unpack_from(buf, 0)[0]
        payload = buf[4:4 + size]
        del buf[:4 + size]
        _op, seq, name, args, kwargs = _decode_payload(payload)
        fn = namespace.get(name)
        if not callable(fn):
            send(["error", seq, "no_function", name])
            continue
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the agent's exception is its feedback
            send(["error", seq, "raised", _describe(exc, module, source, folder)])
            continue
        try:
            frame = encode(["ok", seq, value])
        except BaseException as exc:  # noqa: BLE001 - WireError, or the agent's own code raising
            frame = encode(["error", seq, "unsendable", _text(exc) if not isinstance(exc, WireError) else str(exc)])
        _write_all(rep, frame)


if __name__ == "__main__":
    if sys.argv[1:2] == [_SERVER_FLAG]:
        sys.exit(_serve(sys.argv[2:]))
    print(__doc__)
