"""The agent's side of :mod:`sandboxes.agent`: the server run in the agent's own fresh interpreter.

``run_agent`` starts ``python -I -c SOURCE --agent-server REQ REP MODULE MEMORY_MB PARENT`` in the
agent's folder, where SOURCE (:func:`server_source`) registers :mod:`sandboxes.wire` and this
module from their text (nothing of the evaluator's is importable there, inside the sandbox
container nothing of openended at all), then runs :func:`serve`. The server hardens its process
(no core dumps, ``RLIMIT_AS`` = MEMORY_MB when not 0, SIGKILL when the evaluator dies, subreaper
of the agent's own processes), compiles and executes MODULE in a fresh namespace (``__name__ ==
"agent"``) and answers on the pipe REP, one frame per message:

- first ``["ready", 0, [callable names]]``, or ``["error", 0, "load", feedback]`` and exit;
- then for each ``["call", seq, name, args, kwargs]`` read from REQ: ``["ok", seq, value]``, or
  ``["error", seq, kind, text]`` with kind ``"raised"`` (the agent's exception: type, message,
  its innermost line), ``"unsendable"`` (a value the wire cannot carry) or ``"no_function"``;
- it exits when REQ closes.

Standard library only; stdin, stdout and stderr are /dev/null.
"""

from __future__ import annotations

import os
import signal
import sys

from sandboxes.wire import U32, WireError, decode_payload, encode

__all__ = ["SERVER_FLAG", "serve", "server_source"]

SERVER_FLAG = "--agent-server"
_PARTS = ("wire", "agent_server")  # the modules the agent's process registers, each after those it imports
# As the runner's bootstrap (openended.sandbox.jobdir) registers the in-sandbox modules: from their text.
_BOOTSTRAP = """import sys, types
_package = sys.modules.setdefault("sandboxes", types.ModuleType("sandboxes"))
_package.__path__ = []
for _name, _source in {sources!r}:
    _module = types.ModuleType("sandboxes." + _name)
    _module.__source__ = _source
    sys.modules[_module.__name__] = _module
    exec(compile(_source, "sandboxes/" + _name + ".py", "exec"), _module.__dict__)
    setattr(_package, _name, _module)
del _package, _name, _source, _module
if sys.argv[1:2] == [{flag!r}]:
    sys.exit(sys.modules["sandboxes.agent_server"].serve(sys.argv[2:]))
"""
_SOURCE: dict[bool, str] = {}


def _text_of(module) -> str:
    """A module's source: as it was registered from its text (``__source__``), else its file."""
    text = getattr(module, "__source__", None)
    if text is None:
        with open(module.__file__, encoding="utf-8") as fh:
            text = fh.read()
    return text


def server_source(model: bool = False) -> str:
    """The source the agent's interpreter runs with ``-c``: the modules it needs registered, then :func:`serve`.
    With ``model``, also :mod:`sandboxes.model` (the model gateway's client)."""
    if model not in _SOURCE:
        names = _PARTS + (("model",) if model else ())
        if model:
            import importlib

            importlib.import_module("sandboxes.model")  # registered by the runner, or the installed package
        sources = [(name, _text_of(sys.modules["sandboxes." + name])) for name in names]
        _SOURCE[model] = _BOOTSTRAP.format(sources=sources, flag=SERVER_FLAG)
    return _SOURCE[model]


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


def serve(argv: list[str]) -> int:
    """Serve the agent: ``argv`` is REQ REP MODULE MEMORY_MB PARENT; the exit status (0) once REQ closes."""
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
        while len(buf) < 4 or len(buf) < 4 + U32.unpack_from(buf, 0)[0]:
            chunk = os.read(req, 1 << 16)
            if not chunk:
                return 0
            buf += chunk
        size = U32.unpack_from(buf, 0)[0]
        payload = buf[4:4 + size]
        del buf[:4 + size]
        _op, seq, name, args, kwargs = decode_payload(payload)
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
