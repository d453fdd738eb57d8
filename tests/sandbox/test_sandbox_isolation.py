"""Issue 11's isolation in the docker sandbox, on a real engine: a pool child sees exactly what a
fresh one sees (IPC objects, /dev/shm, /tmp, /work, read-only folders and memory left behind are
gone), what survives the clean-up retires the container, the seccomp profile refuses io_uring and
ptrace, and the container learns nothing of the host's paths."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import ROOT

from openended.sandbox import FailureKind, Limits, SandboxSpec
from openended.sandbox.docker_sandbox import DockerSandbox

HOSTILE = ROOT / "tests" / "tasks" / "hostile"


def _agent(body: str) -> dict[str, bytes]:
    return {"child.py": ("def run():\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")).encode()}


def _docker(mode: str, label: str) -> DockerSandbox:
    spec = SandboxSpec(kind="docker", mode=mode, campaign_label=label, pool_max_evaluations=50,
                       limits=Limits(timeout_s=10, memory_mb=192, pids=32))
    return DockerSandbox(spec, str(HOSTILE))


# Leaves a 120 MiB SysV shared-memory segment (touched, so it is charged to the container), a SysV
# message queue and semaphore set, a POSIX message queue, files in /dev/shm, and folders made
# read-only (and unreadable) under /tmp and /work; then reports success.
LEAVER = _agent("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    size = 120 * 1024 * 1024
    seg = libc.shmget(0, size, 0o1600)
    assert seg >= 0, ctypes.get_errno()
    addr = libc.shmat(seg, None, 0)
    ctypes.memset(addr, 1, size)
    libc.shmdt(ctypes.c_void_p(addr))
    assert libc.msgget(0, 0o1600) >= 0 and libc.semget(0, 1, 0o1600) >= 0
    with open("/dev/mqueue/left", "w"):
        pass
    with open("/dev/shm/left", "wb") as fh:
        fh.write(b"x" * 1024 * 1024)
    for top in ("/tmp", "/work"):
        os.makedirs(top + "/locked/inner")
        open(top + "/locked/inner/file", "w").write("x")
        os.chmod(top + "/locked/inner", 0)
        os.chmod(top + "/locked", 0o555)
    return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": __import__("socket").gethostname()}
""")

# What a child can see of earlier children, and whether 120 MiB of its own fit (they do not when
# the leaver's segment is still there).
PROBE = _agent("""
    import json, os, socket
    def rows(kind):
        return len(open("/proc/sysvipc/" + kind).read().splitlines()) - 1
    seen = {"shm": rows("shm"), "msg": rows("msg"), "sem": rows("sem"),
            "tmp": os.listdir("/tmp"), "dev_shm": os.listdir("/dev/shm"), "mqueue": os.listdir("/dev/mqueue"),
            "work": [n for n in os.listdir("/work") if n != os.path.basename(os.getcwd())]}
    block = bytearray(120 * 1024 * 1024)
    block[::4096] = b"y" * len(block[::4096])
    return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": json.dumps([socket.gethostname(), seen])}
""")

CLEAN = {"shm": 0, "msg": 0, "sem": 0, "tmp": [], "dev_shm": [], "mqueue": [], "work": []}


@pytest.mark.parametrize("mode", ["pool", "fresh"])
def test_a_child_sees_nothing_an_earlier_child_left(docker_engine, mode):
    box = _docker(mode, f"test-isolation-{mode}")
    try:
        left = box.evaluate([LEAVER], {})
        assert left.failure_kind is None, left.reason
        assert left.retire is None, "everything it left was cleaned up"
        probe = box.evaluate([PROBE], {})
        assert probe.failure_kind is None, (probe.failure_kind, probe.reason)
        host, seen = json.loads(probe.results[0]["feedback"])
        assert seen == CLEAN
        if mode == "pool":
            assert host == left.results[0]["feedback"], "the same container, cleaned rather than replaced"
        else:
            assert host != left.results[0]["feedback"]
    finally:
        box.close()


def test_what_survives_the_clean_up_retires_the_container(docker_engine):
    # A folder nested deeper than the runner's clean-up reaches (its walk is recursive).
    deep = _agent("""
        import os
        os.chdir("/tmp")
        for _ in range(1500):
            os.mkdir("d")
            os.chdir("d")
        return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": __import__("socket").gethostname()}
    """)
    box = _docker("pool", "test-isolation-retire")
    try:
        out = box.evaluate([deep], {})
        assert out.failure_kind is None, out.reason
        assert out.retire and "left after clean-up" in out.retire and "/tmp" in out.retire, out.retire
        probe = box.evaluate([PROBE], {})
        host, seen = json.loads(probe.results[0]["feedback"])
        assert host != out.results[0]["feedback"], "a new container"
        assert seen == CLEAN
    finally:
        box.close()


def test_seccomp_refuses_io_uring_and_ptrace_and_mounts_reveal_no_host_path(docker_engine):
    peek = _agent("""
        import ctypes, errno, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        ring = libc.syscall(425, 8, ctypes.create_string_buffer(120))
        ring_errno = ctypes.get_errno()
        target = os.fork()
        if target == 0:
            time.sleep(3)
            os._exit(0)
        traced = libc.syscall(101, 16, target, 0, 0)  # PTRACE_ATTACH (x86_64)
        trace_errno = ctypes.get_errno()
        os.kill(target, 9)
        mounts = open("/proc/self/mountinfo").read()
        cmdline = open("/proc/1/cmdline", "rb").read().decode("utf-8", "replace")
        feedback = [ring, errno.errorcode.get(ring_errno), traced, errno.errorcode.get(trace_errno), mounts, cmdline]
        return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": __import__("json").dumps(feedback)}
    """)
    box = _docker("fresh", "test-isolation-seccomp")
    try:
        out = box.evaluate([peek], {})
        assert out.failure_kind is None, out.reason
        ring, ring_errno, traced, trace_errno, mounts, cmdline = json.loads(out.results[0]["feedback"])
        assert (ring, ring_errno) == (-1, "EPERM")
        assert (traced, trace_errno) == (-1, "EPERM")
        for text in (mounts, cmdline):
            assert str(ROOT) not in text and "tests/tasks" not in text, "a host path of the checkout"
    finally:
        box.close()


@pytest.mark.parametrize(("name", "body", "kind", "words"), [
    ("deep result on the channel", "import os\nos.write(3, b'[' * 200000)\nos._exit(0)",
     FailureKind.BAD_RESULT, "nested too deeply"),
    ("deep value returned", "v = []\nfor _ in range(200000):\n    v = [v]\n"
     "return {'fitness': 0.5, 'descriptors': [0.1, 0.1], 'metrics': {'v': v}}",
     FailureKind.BAD_RESULT, "json cannot hold"),
    ("60 MB result", "import os\nchunk = b' ' * (1 << 20)\nfor _ in range(60):\n    os.write(3, chunk)\nos._exit(0)",
     FailureKind.BAD_RESULT, "over 8388608 bytes"),
    ("no file descriptor left", "import os\nfds = []\nwhile True:\n    fds.append(os.open('/dev/null', os.O_RDONLY))",
     FailureKind.CRASH, "too many open files"),
    ("second result", "import os\nos.write(3, b'{\"token\": \"x\", \"results\": []}')\nreturn {'fitness': 0.5, "
     "'descriptors': [0.1, 0.1]}", FailureKind.FORGED_RESULT, "more than one result"),
])
def test_failure_kinds_of_hostile_results(docker_engine, name, body, kind, words):
    box = _docker("pool", "test-isolation-kinds")
    try:
        out = box.evaluate([_agent(body)], {})
        assert out.failure_kind is kind, (name, out.failure_kind, out.reason)
        assert words in out.reason.lower(), (name, out.reason)
        assert box.evaluate([PROBE], {}).failure_kind is None, "the next child is evaluated normally"
    finally:
        box.close()
