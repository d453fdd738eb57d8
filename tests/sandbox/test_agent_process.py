"""sandboxes.agent: an agent's code in a process of its own, called across a pipe (real processes).

Covers the values that cross (and those refused), the agent's feedback (load errors, exceptions,
timeouts, a dead process, hostile replies), what the agent cannot see (the evaluator's environment,
fds, memory), the guard on the evaluator's files (ForgedResult), that no process is left behind,
and, in the sandbox image, the same library registered the runner's way (exec'd from its source).
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sandboxes import agent as lib
from sandboxes.agent import AgentError, AgentTimeout, ForgedResult, WireError, decode, encode, run_agent

LIBRARY = Path(lib.__file__)


def src(body: str) -> dict[str, bytes]:
    return {"main.py": textwrap.dedent(body).encode()}


def gone(pid: int, wait_s: float = 3.0) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for init counts as ended)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


# a helper the hostile agents use: write raw bytes on the reply pipe, then wait (the server's argv
# is ['-c', '--agent-server', REQ_FD, REP_FD, module, memory_mb, parent_pid])
RAW = """
import os, sys, time, struct, json

def raw(data):
    os.write(int(sys.argv[3]), data)
    time.sleep(60)

def frame(doc, blob=b""):
    return text_frame(json.dumps(doc).encode(), blob)

def text_frame(text, blob=b""):
    body = struct.pack("<I", len(text)) + text + blob
    return struct.pack("<I", len(body)) + body
"""


# --- values ------------------------------------------------------------------------------------


def test_calls_return_scalars_arrays_and_nested_values():
    agent_src = src("""
        import numpy as np

        def echo(*args, **kwargs):
            return [list(args), kwargs]

        def arrays():
            return {"f": np.linspace(0, 1, 5), "i": np.arange(6, dtype=np.int16).reshape(2, 3),
                    "b": np.array([True, False]), "u": np.arange(3, dtype=np.uint64), "e": np.zeros((0, 4)),
                    "scalar": np.float32(1.5), "big": np.arange(3, dtype=">i4"), "t": np.arange(6.0).reshape(2, 3).T}

        def twice(x):
            x *= 2      # the agent's own copy: writable
            return x
    """)
    with run_agent(agent_src, "main.py", timeout_s=20) as agent:
        assert agent.callables == ["arrays", "echo", "twice"]
        value = [None, True, -3, 2**70, 1.25, "ünïcode", [1, [2, [3]]], {"k": {"n": None}}]
        assert agent.call("echo", *value, key=(1, 2)) == [value, {"key": [1, 2]}]
        nan_inf = agent.call("echo", math.nan, math.inf, -math.inf, -0.0)[0]
        assert math.isnan(nan_inf[0]) and nan_inf[1:3] == [math.inf, -math.inf] and math.copysign(1, nan_inf[3]) < 0
        got = agent.function("arrays")()
        assert np.array_equal(got["f"], np.linspace(0, 1, 5)) and got["f"].dtype == np.float64
        assert got["i"].dtype == np.int16 and got["i"].tolist() == [[0, 1, 2], [3, 4, 5]]
        assert got["b"].tolist() == [True, False] and got["u"].dtype == np.uint64 and got["e"].shape == (0, 4)
        assert got["scalar"] == 1.5 and type(got["scalar"]) is float
        assert got["big"].tolist() == [0, 1, 2] and got["big"].dtype == np.dtype("<i4")
        assert got["t"].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
        mine = np.arange(4.0)
        assert agent.function("twice")(mine).tolist() == [0.0, 2.0, 4.0, 6.0]
        assert mine.tolist() == [0.0, 1.0, 2.0, 3.0]  # the evaluator's array is not the agent's
        assert got["f"].flags.writeable


def test_multi_file_agent_imports_its_own_modules_and_runs_in_its_folder():
    files = {"main.py": b"import helper\nimport os\ndef f(x):\n    return [helper.double(x), os.getcwd(),"
                        b" os.environ['HOME'], __name__]\n",
             "helper.py": b"def double(x):\n    return 2 * x\n",
             "data/table.txt": b"abc"}
    with run_agent(files, "main.py", timeout_s=20) as agent:
        double, cwd, home, name = agent.call("f", 21)
        assert double == 42 and cwd == home == agent.folder and name == "agent"
        assert (Path(agent.folder) / "data" / "table.txt").read_bytes() == b"abc"
    assert not Path(agent.folder).exists()


def test_prints_never_reach_the_evaluators_output(capfd):
    with run_agent(src("print('x' * 100000)\nimport sys\ndef f():\n    print('y', file=sys.stderr)\n    return 1\n"),
                   "main.py", timeout_s=20) as agent:
        assert agent.call("f") == 1
    out, err = capfd.readouterr()
    assert "x" not in out and "y" not in err


# --- feedback ----------------------------------------------------------------------------------


@pytest.mark.parametrize("files,message", [
    ({"other.py": b""}, r"^genome has no main\.py \(files: \['other\.py'\]\)$"),
    ({"main.py": b"\xff\xfe"}, r"^main\.py is not UTF-8 text"),
    ({"main.py": b"x = 1\ndef f(:\n"}, r"^main\.py does not parse: line 2: "),
    ({"main.py": b"x = 1\nraise ValueError('no good')\n"},
     r"^main\.py failed while loading: ValueError: no good at line 2: `raise ValueError\('no good'\)`$"),
    ({"main.py": b"import helper\n", "helper.py": b"\n\n1 / 0\n"},
     r"^main\.py failed while loading: ZeroDivisionError: division by zero at line 3 of helper\.py: `1 / 0`$"),
    ({"main.py": b"import os\nos._exit(4)\n"},
     r"^the agent's process died while loading main\.py: it exited with status 4$"),
    ({"../main.py": b"", "main.py": b""}, r"is not a plain relative path"),
    ({"main.py": b"", "main.py/x": b""}, r"^the agent's file 'main\.py/x' cannot be written: File exists$"),
])
def test_load_failures_are_agent_errors_with_the_line(files, message):
    import re

    with pytest.raises(AgentError) as info:
        run_agent(files, "main.py", timeout_s=20)
    assert re.search(message, str(info.value)), str(info.value)


def test_exceptions_in_calls_name_type_message_and_the_agents_line():
    with run_agent(src("""
        def f(x):
            gap = x - 1
            return 1 // gap

        def g():
            raise SystemExit(3)
    """), "main.py", timeout_s=20) as agent:
        with pytest.raises(AgentError, match=r"^f raised ZeroDivisionError: integer division or modulo by zero "
                                             r"at line 4: `return 1 // gap`$"):
            agent.call("f", 1)
        assert agent.call("f", 2) == 1  # a raised exception leaves the agent usable
        with pytest.raises(AgentError, match=r"^g raised SystemExit: 3 at line 7"):
            agent.call("g")
        with pytest.raises(AgentError, match=r"^main\.py defines no function 'h' \(callables defined: \['f', 'g'\]\)$"):
            agent.function("h")


def test_values_that_cannot_cross_are_refused():
    with run_agent(src("""
        import numpy as np

        def bad(kind):
            return {"set": {1}, "object": np.array([None]), "complex": np.ones(2, complex), "key": {1: 2},
                    "deep": eval("[" * 100 + "]" * 100)}[kind]
    """), "main.py", timeout_s=20) as agent:
        for kind, why in [("set", "cannot send a set"), ("object", "dtype object"), ("complex", "dtype complex128"),
                          ("key", "dict keys must be str"), ("deep", "nested deeper than 64")]:
            with pytest.raises(AgentError, match=f"^bad returned a value that cannot be sent back: .*{why}"):
                agent.call("bad", kind)
        with pytest.raises(WireError):  # the evaluator's own bad argument is its bug, not the agent's
            agent.call("bad", {1, 2})


def test_os_exit_in_a_call_is_an_agent_error_and_later_calls_fail():
    with run_agent(src("import os\ndef f():\n    os._exit(0)\n"), "main.py", timeout_s=20) as agent:
        pid = agent.pid
        with pytest.raises(AgentError, match=r"^the agent's process died during f\(\): it exited with status 0$"):
            agent.call("f")
        with pytest.raises(AgentError, match="cannot take calls: its process died earlier"):
            agent.call("f")
    assert gone(pid)


def test_killed_by_a_signal_is_reported():
    with run_agent(src("import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGSEGV)\n"), "main.py",
                   timeout_s=20) as agent:
        with pytest.raises(AgentError, match="killed by SIGSEGV"):
            agent.call("f")


def test_memory_limit():
    with run_agent(src("def f():\n    return len(bytearray(2 * 1024 ** 3))\n"), "main.py", timeout_s=20,
                   memory_mb=300) as agent:
        with pytest.raises(AgentError, match="^f raised MemoryError"):
            agent.call("f")


# --- time budget, and no process left behind ---------------------------------------------------


def test_an_infinite_loop_times_out_within_the_budget_and_leaves_no_process():
    with run_agent(src("""
        import subprocess

        def helper():
            return subprocess.Popen(["sleep", "1000"]).pid

        def spin():
            while True:
                pass
    """), "main.py", timeout_s=1.5) as agent:
        pid, helper = agent.pid, agent.call("helper")
        started = time.monotonic()
        with pytest.raises(AgentTimeout, match=r"^timed out during spin\(\): the agent used up its 1.5s time budget$"):
            agent.call("spin")
        assert time.monotonic() - started < 1.5 + 0.5 and agent.seconds_used == pytest.approx(1.5, abs=0.3)
        assert gone(pid, 0.1) and gone(helper)  # killed at the timeout, not only at close


def test_the_budget_is_spent_across_calls():
    with run_agent(src("import time\ndef nap():\n    time.sleep(0.3)\n"), "main.py", timeout_s=1.0) as agent:
        with pytest.raises(AgentTimeout):
            for _ in range(5):
                agent.call("nap")
        assert 0.9 < agent.seconds_used < 1.3


def test_a_slow_load_times_out():
    with pytest.raises(AgentTimeout, match=r"^timed out while loading main\.py"):
        run_agent(src("while True:\n    pass\n"), "main.py", timeout_s=0.5)


def test_escaped_daemons_are_killed_on_close():
    """A grandchild in a session of its own, whose parent exited: the agent is its subreaper."""
    with run_agent(src("""
        import os, time

        def daemon():
            r, w = os.pipe()
            if os.fork() == 0:
                os.setsid()
                pid = os.fork()
                if pid == 0:
                    time.sleep(1000)
                    os._exit(0)
                os.write(w, str(pid).encode())
                os._exit(0)
            return int(os.read(r, 100))
    """), "main.py", timeout_s=20) as agent:
        daemon = agent.call("daemon")
        assert not gone(daemon, 0.1)
    assert gone(daemon)


def test_the_agent_shares_the_callers_cpu_until_close():
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    before = os.sched_getaffinity(0)
    with run_agent(src("import os\ndef cpus():\n    return sorted(os.sched_getaffinity(0))\n"), "main.py",
                   timeout_s=20) as agent:
        mine = os.sched_getaffinity(0)
        assert len(mine) == 1 and agent.call("cpus") == sorted(mine)
    assert os.sched_getaffinity(0) == before
    with run_agent(src("import os\ndef cpus():\n    return sorted(os.sched_getaffinity(0))\n"), "main.py",
                   timeout_s=20, same_cpu=False) as agent:
        assert os.sched_getaffinity(0) == before and agent.call("cpus") == sorted(before)


def test_close_kills_and_cleans_up_when_the_evaluator_raises():
    with pytest.raises(RuntimeError), run_agent(src("def f():\n    return 1\n"), "main.py", timeout_s=20) as agent:
        pid, folder = agent.pid, agent.folder
        raise RuntimeError("the evaluator's own bug")
    assert gone(pid) and not os.path.exists(folder)
    agent.close()  # idempotent


# --- what the agent cannot see -----------------------------------------------------------------


def test_the_agent_sees_no_environment_no_fds_and_none_of_the_evaluators_memory(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENENDED_TEST_SECRET", "sk-not-for-agents")
    extra = open(tmp_path / "evaluator.txt", "w")  # an fd of the evaluator's (not close-on-exec would not matter)
    os.set_inheritable(extra.fileno(), True)
    try:
        with run_agent(src("""
            import os, sys

            def probe():
                open_fds = []
                for fd in range(3, 4096):  # the pipes keep the evaluator's numbers, high in a long test run
                    try:
                        os.fstat(fd)
                        open_fds.append(fd)
                    except OSError:
                        pass
                return {"env": dict(os.environ), "fds": open_fds, "listed": sorted(os.listdir("/proc/self/fd")),
                        "std": [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
                        "modules": sorted(m for m in ("pytest", "numpy", "hypothesis") if m in sys.modules),
                        "pgid": os.getpgid(0), "pid": os.getpid(), "argv": sys.argv[1:]}
        """), "main.py", timeout_s=20) as agent:
            seen = agent.call("probe")
    finally:
        extra.close()
    assert set(seen["env"]) <= {"HOME", "TMPDIR", "PATH", "PYTHONDONTWRITEBYTECODE", "OPENBLAS_NUM_THREADS",
                                "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LC_ALL", "LC_CTYPE"}
    assert "sk-not-for-agents" not in json.dumps(seen)
    pipes = sorted(int(fd) for fd in seen["argv"][1:3])
    assert seen["fds"] == pipes  # its two pipes, nothing of the evaluator's
    assert len({int(fd) for fd in seen["listed"]} - {0, 1, 2, *pipes}) <= 1  # at most listdir's own fd
    assert seen["std"] == ["/dev/null"] * 3
    assert seen["modules"] == []  # a fresh interpreter, not a fork of the evaluator
    assert seen["pgid"] == seen["pid"] != os.getpgid(0)


# --- hostile replies ---------------------------------------------------------------------------


@pytest.mark.parametrize("body,message", [
    ("raw(struct.pack('<I', 2**31))", r"reply during f\(\) is 2147483648 bytes \(at most 16777216\)$"),
    ("raw(frame([['ok', 1, json.loads('[' * 100 + ']' * 100)], []]))", "nested deeper than 64 levels"),
    ("raw(frame([['ok', 1, {'\\x00': 0}], [['|O', [1]]]], b'x' * 8))", "malformed array description"),
    ("raw(frame([['ok', 1, {'\\x00': 0}], [['<f8', [1000]]]], b'x' * 8))", "array data runs past the end"),
    ("raw(frame([['ok', 1, {'\\x00': 0}], []]))", "malformed array marker"),
    ("raw(frame([['ok', 1, 5], []], b'junk'))", "4 bytes after the document"),
    ("raw(frame([['ok', 2, 5], []]))", r"malformed reply during f\(\)$"),
    ("raw(frame([['ok', 1], []]))", "malformed reply"),
    ("raw(frame([{'ok': 1}, []]))", "malformed reply"),
    ("raw(frame([['ok', 1, 5], [], 'extra']))", "not \\[value, arrays\\]"),
    ("raw(struct.pack('<I', 9) + b'\\xff' * 9)", "document runs past the end"),
    ("raw(text_frame(b'{{{{'))", "undecodable frame: JSONDecodeError"),
    ("raw(text_frame(b'\\xff\\xfe'))", "undecodable frame: UnicodeDecodeError"),
    ("raw(text_frame(b'[' + b'9' * 5000 + b',[]]'))", "undecodable frame: ValueError"),  # too many digits
    ("os.write(int(sys.argv[3]), struct.pack('<I', 20) + b'short'); os._exit(0)",
     r"died during f\(\): it exited with status 0"),
])
def test_hostile_replies_are_agent_errors_and_the_evaluator_goes_on(body, message):
    with run_agent({"main.py": (RAW + f"\ndef f():\n    {body}\n").encode()}, "main.py", timeout_s=20) as agent:
        with pytest.raises(AgentError, match=message):
            agent.call("f")
        with pytest.raises(AgentError, match="cannot take calls"):
            agent.call("f")
    with run_agent(src("def f():\n    return 'fine'\n"), "main.py", timeout_s=20) as agent:
        assert agent.call("f") == "fine"


def test_a_garbage_first_message_is_an_agent_error():
    body = RAW + "\nos.write(int(sys.argv[3]), frame([['ready', 0, 'not a list'], []]))\ntime.sleep(60)\n"
    with pytest.raises(AgentError, match="malformed first message while loading main.py"):
        run_agent({"main.py": body.encode()}, "main.py", timeout_s=20)


# --- the guard: the evaluator's files ----------------------------------------------------------


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder like the runner's: the current directory and $TMPDIR, the result file not yet there."""
    folder = tmp_path / "eval-1"
    folder.mkdir()
    (folder / "made-before.txt").write_text("the evaluator's")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


WRITER = src("""
    import os

    def write(path, data="forged"):
        with open(path, "w") as fh:
            fh.write(data)
        return "written"

    def forge_and_exit():
        write(os.path.join("..", ".result.json"), '[{"fitness": 0.0, "valid": true}]')
        os._exit(0)

    def sneaky():
        st = os.stat("../made-before.txt")
        write("../made-before.txt", "the agent's")  # same size, and the mtime put back
        os.utime("../made-before.txt", ns=(st.st_atime_ns, st.st_mtime_ns))

    def own():
        os.mkdir("scratch")
        return write("scratch/notes.txt")
""")


def test_a_forged_result_file_is_detected_at_the_call(work):
    with pytest.raises(ForgedResult) as info, run_agent(WRITER, "main.py", timeout_s=20) as agent:
        assert agent.folder.startswith(str(work))  # made in the guarded folder, which is the runner's
        agent.call("write", os.path.join("..", ".result.json"))
    assert info.value.path == os.path.realpath(work / ".result.json") and "added" in str(info.value)
    assert not isinstance(info.value, Exception)  # an evaluator's `except Exception` cannot swallow it


def test_forge_then_exit_is_a_forged_result_not_a_dead_agent(work):
    with pytest.raises(ForgedResult, match=r"\.result\.json added"), \
            run_agent(WRITER, "main.py", timeout_s=20) as agent:
        try:
            agent.call("forge_and_exit")
        except AgentError:  # what an evaluator would catch: the ForgedResult comes first
            pytest.fail("the forgery was reported as an AgentError")


def test_overwriting_a_file_the_evaluator_made_is_detected_even_with_its_mtime_restored(work):
    with pytest.raises(ForgedResult, match=r"made-before\.txt changed \(.*ctime"), \
            run_agent(WRITER, "main.py", timeout_s=20) as agent:
        agent.call("sneaky")


def test_writes_at_load_time_are_detected(work):
    with pytest.raises(ForgedResult, match="loaded.txt added"):
        run_agent(src("open('../loaded.txt', 'w').close()\n"), "main.py", timeout_s=20)
    assert sorted(os.listdir(work)) == ["loaded.txt", "made-before.txt"]  # the agent's own folder is gone


def test_the_agents_own_folder_is_its_own(work):
    with run_agent(WRITER, "main.py", timeout_s=20) as agent:
        assert agent.call("own") == "written"
        assert agent.call("write", "top.txt") == "written"
    assert sorted(os.listdir(work)) == ["made-before.txt"]


def test_a_late_write_by_a_background_thread_is_caught_at_close(work):
    with pytest.raises(ForgedResult, match="late.txt added"), run_agent(src("""
        import threading, time

        def later():
            def write():
                time.sleep(0.3)
                open("../late.txt", "w").close()
            threading.Thread(target=write).start()
            return "ok"
    """), "main.py", timeout_s=20) as agent:
        assert agent.call("later") == "ok"
        time.sleep(0.6)


def test_no_guard_outside_the_runners_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TMPDIR", raising=False)
    with run_agent(WRITER, "main.py", timeout_s=20) as agent:
        assert not agent.folder.startswith(str(tmp_path))
        agent.call("write", str(tmp_path / "unguarded.txt"))  # the host's files are not the runner's
    with pytest.raises(ForgedResult, match="explicit.txt added"), \
            run_agent(WRITER, "main.py", timeout_s=20, guard=tmp_path) as agent:
        agent.call("write", str(tmp_path / "explicit.txt"))


# --- the wire format ---------------------------------------------------------------------------

_dtypes = st.sampled_from(["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                           "float16", "float32", "float64", ">f8", ">i4"])
_arrays = _dtypes.flatmap(lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                                                 max_side=4)))
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
_keys = st.text(max_size=8).filter(lambda k: k != "\x00")
_values = st.recursive(_scalars | _arrays, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    _keys, inner, max_size=4), max_leaves=20)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype.newbyteorder("<") == b.dtype
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float):
        return type(b) is float and (a == b and math.copysign(1, a) == math.copysign(1, b)
                                     or math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return type(b) is list and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_allowed_values_round_trip(value):
    assert _same(value, decode(encode(value)))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wire_errors(data):
    for frame in (data, struct.pack("<I", len(data)) + data,
                  struct.pack("<II", len(data) + 4, len(data)) + data):
        try:
            decode(frame)
        except WireError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values, st.data())
def test_corrupted_frames_raise_only_wire_errors(value, data):
    frame = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(frame))
    except WireError:
        pass


def test_limits_of_the_format():
    assert decode(encode([[[[1]]]])) == [[[[1]]]]
    deep: list = []
    for _ in range(lib.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(WireError, match="nested deeper"):
        encode(deep)
    with pytest.raises(WireError, match="at most 16777216"):
        encode(np.zeros(3 * 1024 * 1024))
    with pytest.raises(WireError, match="reserved"):
        encode({"\x00": 1})
    text = json.dumps([{"\x00": 0}, [["<f8", [1]]]]).encode()
    good = struct.pack("<I", len(text)) + text + b"\x00" * 8
    assert decode(struct.pack("<I", len(good)) + good).tolist() == [0.0]
    for bad_meta in ('[["|O", [1]]]', '[["<f8", [-1]]]', '[["<f8", [true]]]', '[["<f8", 1]]', '[["<c16", [1]]]'):
        text = ('[{"\\u0000": 0}, ' + bad_meta + "]").encode()
        body = struct.pack("<I", len(text)) + text + b"\x00" * 16
        with pytest.raises(WireError):
            decode(struct.pack("<I", len(body)) + body)


def test_per_call_round_trip_is_fast():
    """The binpack call: a float and up to 1000 float64 bins out, as many scores back."""
    with run_agent(src("def priority(item, bins):\n    return -(bins - item)\n"), "main.py", timeout_s=60) as agent:
        priority = agent.function("priority")
        bins = np.full(1000, 100.0)
        priority(1.0, bins)
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(200):
                priority(3.0, bins)
            best = min(best, (time.perf_counter() - started) / 200)
    assert best < 0.002, f"{best * 1e6:.0f} us per call"  # generous: a loaded CI machine; measured ~100 us


# --- in the sandbox image, registered the way the runner does it ------------------------------

IN_IMAGE = r'''
import ctypes, os, sys, types
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # non-dumpable, as the runner and its evaluation children are
package = sys.modules.setdefault("sandboxes", types.ModuleType("sandboxes"))
package.__path__ = []
for name in MODULES:  # as the runner's bootstrap does (openended.sandbox.jobdir), in its order
    source = open(f"/task/{name}.py").read()
    module = types.ModuleType("sandboxes." + name)
    module.__dict__["__source__"] = source
    sys.modules[module.__name__] = module
    exec(compile(source, f"sandboxes/{name}.py", "exec"), module.__dict__)
    setattr(package, name, module)
from sandboxes.agent import AgentError, ForgedResult, run_agent
work = "/work/eval-1"
os.makedirs(work)
os.chdir(work)
os.environ.clear()
os.environ.update({"HOME": work, "TMPDIR": work, "PATH": "/usr/bin:/bin", "SECRET": "sk-inside"})
agent_src = b"""
import os, numpy as np
def priority(item, bins):
    return -(bins - item)
def peek():
    seen = []
    for what in ("environ", "mem", "fd"):
        try:
            path = f"/proc/{os.getppid()}/{what}"
            seen.append(what + ":" + str(len(os.listdir(path)) if what == "fd" else len(open(path, "rb").read(64))))
        except OSError as exc:
            seen.append(what + ":" + type(exc).__name__)
    return seen
def forge():
    open("../.result.json", "w").write("[]")
"""
out = []
try:
    with run_agent({"priority.py": agent_src}, "priority.py", timeout_s=20) as agent:
        import numpy as np
        out.append(agent.call("priority", 3.0, np.full(4, 10.0)).tolist())
        out.append(agent.call("peek"))
        try:
            agent.call("forge")
        except ForgedResult as exc:  # swallowed here: close raises it again
            out.append("forged: " + str(exc))
except ForgedResult:
    out.append("again at close")
print(out)
'''


def test_in_the_sandbox_image_registered_from_its_source(docker_engine, tmp_path):
    from openended.sandbox import Limits, SandboxSpec
    from openended.sandbox.engine import client, container_options
    from openended.sandbox.jobdir import IN_SANDBOX_MODULES

    task = tmp_path / "task"
    task.mkdir()
    for name in IN_SANDBOX_MODULES:
        (task / f"{name}.py").write_text((LIBRARY.parent / f"{name}.py").read_text())
    (task / "check.py").write_text(IN_IMAGE.replace("MODULES", repr(IN_SANDBOX_MODULES), 1))
    for path in (tmp_path, task, *task.iterdir()):
        path.chmod(0o755)
    options = container_options(SandboxSpec(kind="docker", limits=Limits(memory_mb=512)), task, tmp_path)
    options.pop("log_config")
    container = client().containers.run(command=["python3", "-I", "/task/check.py"], **options)
    try:
        status = container.wait(timeout=120)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, logs
    out = eval(logs.strip().splitlines()[-1])  # noqa: S307 - our own script's printed list
    assert out[0] == [-7.0, -7.0, -7.0, -7.0]
    assert out[1] == ["environ:PermissionError", "mem:PermissionError", "fd:PermissionError"], out[1]
    assert out[2].startswith("forged: the agent changed the evaluator's files: /work/eval-1/.result.json added")
    assert out[3:] == ["again at close"]


def test_the_library_imports_only_the_standard_library():
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import sandboxes.agent; "
             "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(LIBRARY.parents[1])], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
