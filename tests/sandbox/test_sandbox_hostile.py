"""Hostile children, each run through the Docker sandbox inside a real campaign (the CLI, real Ray,
a real engine): each is recorded as a failed child with the right stage and failure kind, the
campaign goes on, and the host is unaffected."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, containers_left

from openended.sandbox import campaign_label

HOSTILE_TASK = ROOT / "tests" / "tasks" / "hostile"
FAKE_KEY = "sk-openended-test-" + uuid.uuid4().hex


def _child(body: str) -> str:
    return "def run():\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")


def _hostile(secret_file: Path, port: int) -> dict[str, tuple[str, str, str | None, str]]:
    """name -> (child.py source, fail_stage, failure_kind, a word the reason must contain)."""
    return {
        "infinite_loop": (_child("while True:\n    pass"), "timeout", "timeout", "4s"),
        "memory_bomb": (_child("""
            blocks = []
            while True:
                blocks.append(bytearray(16 * 1024 * 1024))
        """), "sandbox", "oom", "memory"),
        "fork_bomb": (_child("""
            import os, time
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
        """), "sandbox", "pids", "process limit"),
        "network": (_child(f"""
            import socket
            for host in ("172.17.0.1", "{socket.gethostbyname(socket.gethostname())}", "1.1.1.1"):
                try:
                    socket.create_connection((host, {port}), timeout=2).close()
                except OSError as exc:
                    error = exc
                else:
                    return {{"fitness": 1.0, "descriptors": [0.9, 0.9], "metrics": {{"reached": host}}}}
            raise error
        """), "evaluation", "crash", "unreachable"),
        "host_file": (_child(f"return {{'fitness': 1.0, 'descriptors': [0.1, 0.1], "
                             f"'feedback': open({str(secret_file)!r}).read()}}"),
                      "evaluation", "crash", "No such file"),
        "host_env": (_child("""
            import os
            return {"fitness": 1.0, "descriptors": [0.2, 0.2], "feedback": os.environ["OPENENDED_TEST_API_KEY"]}
        """), "evaluation", "crash", "KeyError"),
        "write_outside": (_child("""
            errors = []
            for path in ("/task/pwned", "/agents/pwned", "/etc/pwned", "/pwned", "/usr/lib/pwned"):
                try:
                    open(path, "w").write("x")
                except OSError as exc:
                    errors.append(exc)
                else:
                    return {"fitness": 1.0, "descriptors": [0.3, 0.3], "feedback": "wrote " + path}
            raise errors[0]
        """), "evaluation", "crash", "Read-only file system"),
        "stdout_flood": (_child("""
            import sys
            chunk = "x" * (1024 * 1024)
            for _ in range(100):
                sys.stdout.write(chunk)
            return {"fitness": 1.0, "descriptors": [0.4, 0.4]}
        """), "sandbox", "output_limit", "stdout"),
        "no_result": (_child("import os\nos._exit(0)"), "evaluation", "no_result", "without sending a result"),
        "malformed_result": (_child("""
            import os
            os.write(3, b"{not json")
            os._exit(0)
        """), "invalid", "bad_result", "not valid JSON"),
        "result_file": (_child("""
            import os
            open(".result.json", "w").write('[{"fitness": 1.0, "descriptors": [0.5, 0.5]}]')
            os._exit(0)
        """), "invalid", "forged_result", "result file"),
        "nan_fitness": (_child("return {'fitness': float('nan'), 'descriptors': [0.5, 0.6]}"),
                        "invalid", None, "fitness"),
        "second_result": (_child("""
            import os
            os.write(3, b'{"token": "guess", "results": [{"fitness": 1.0, "descriptors": [0.5, 0.5]}]}')
            return {"fitness": 0.1, "descriptors": [0.5, 0.5]}
        """), "invalid", "forged_result", "more than one result"),
        "deep_result": (_child("""
            import os
            os.write(3, b"[" * 200000)
            os._exit(0)
        """), "invalid", "bad_result", "nested too deeply"),
        "huge_result": (_child("""
            import os
            chunk = b" " * (1 << 20)
            for _ in range(60):
                os.write(3, chunk)
            os._exit(0)
        """), "invalid", "bad_result", "over 8388608 bytes"),
        "fd_exhaustion": (_child("""
            import os
            fds = []
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        """), "evaluation", "crash", "Too many open files"),
        "io_uring": (_child("""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syscall(425, 8, ctypes.create_string_buffer(120)) < 0:
                raise PermissionError(ctypes.get_errno(), "io_uring_setup refused")
            return {"fitness": 1.0, "descriptors": [0.6, 0.6], "feedback": "io_uring allowed"}
        """), "evaluation", "crash", "io_uring_setup refused"),
        "ipc_leftovers": (_child("""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            libc.shmat.restype = ctypes.c_void_p
            seg = libc.shmget(0, 100 * 1024 * 1024, 0o1600)
            ctypes.memset(libc.shmat(seg, None, 0), 1, 100 * 1024 * 1024)
            libc.msgget(0, 0o1600)
            open("/dev/shm/left", "w").write("x")
            os.makedirs("/tmp/locked/inner")
            os.chmod("/tmp/locked", 0o555)
            raise RuntimeError("left IPC objects, /dev/shm and a read-only folder")
        """), "evaluation", "crash", "left IPC objects"),
        "out_of_bounds_fitness": (_child("return {'fitness': 1e308, 'descriptors': [0.5, 0.6]}"),
                                  "invalid", None, "upper bound"),
    }


@pytest.fixture
def listener():
    """A TCP server on every host interface that counts the connections it accepts."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def _write_config(path: Path, db: Path, agents: list[Path], mode: str, budget: int) -> None:
    lines = [
        f'task = "{HOSTILE_TASK}"', f'db = "{db}"', "max_in_flight = 2", "grace_seconds = 0.0",
        "[sandbox]", 'kind = "docker"', f'mode = "{mode}"', "output_bytes = 1000000",
        "[archive]", 'kind = "grid"', "[selection]", 'strategy = "uniform"',
        "[mutation]", 'operator = "noop"', "initial_agents = [" + ", ".join(f'"{a}"' for a in agents) + "]",
        "[budget]", f"max_children = {budget}",
    ]
    path.write_text("\n".join(lines) + "\n")




@pytest.mark.parametrize("mode", ["pool", "fresh"])
def test_hostile_children_fail_with_the_right_kind(tmp_path, cli_env, python, docker_engine, listener, mode):
    port, accepted = listener
    secret = Path(f"/tmp/openended-hostile-secret-{uuid.uuid4().hex}.txt")
    secret.write_text("the host's private file")
    try:
        cases = _hostile(secret, port)
        agents = []
        for name, (source, *_rest) in cases.items():
            folder = tmp_path / "agents" / name
            folder.mkdir(parents=True)
            (folder / "child.py").write_text(source)
            agents.append(folder)
        db = tmp_path / "hostile.db"
        config = tmp_path / "campaign.toml"
        budget = 1 + len(agents) + 6
        _write_config(config, db, agents, mode, budget)
        env = {**cli_env, "OPENENDED_TEST_API_KEY": FAKE_KEY}
        started = time.monotonic()
        proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert time.monotonic() - started < 240

        conn = sqlite3.connect(db)
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, status, fail_stage, fail_reason, operator FROM agents ORDER BY id")}
        kinds = {r[0]: r[1] for r in conn.execute("SELECT agent_id, failure_kind FROM evaluations")}
        assert len(rows) == budget, "every child keeps its row"
        assert rows[0][0] == "archived", "the benign seed is archived"
        for agent_id, (name, (_src, stage, kind, word)) in enumerate(cases.items(), start=1):
            status, fail_stage, reason, operator = rows[agent_id]
            assert operator == "given"
            assert (status, fail_stage) == ("failed", stage), (name, rows[agent_id])
            assert word.lower() in reason.lower(), (name, reason)
            assert kinds.get(agent_id) == kind, (name, kinds.get(agent_id), reason)
        # The campaign went on: children of the benign seed were made and evaluated after the attacks.
        later = [rows[i] for i in range(1 + len(cases), budget)]
        assert later and all(r[0] in ("archived", "rejected") for r in later), later

        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM agents WHERE status IN ('proposed', 'mutated')").fetchone()[0] == 0
        # The host is unaffected.
        assert accepted == [], "a child reached the host's network"
        assert secret.read_text() == "the host's private file"
        assert not (HOSTILE_TASK / "pwned").exists()
        dump = "\n".join(conn.iterdump())
        assert FAKE_KEY not in dump and FAKE_KEY not in proc.stdout + proc.stderr
        conn.close()
        assert containers_left(campaign_label(db)) == [], "every container of the campaign is removed"
    finally:
        secret.unlink(missing_ok=True)


def test_kill_9_of_the_driver_leaves_no_container_after_resume(tmp_path, cli_env, python, docker_engine):
    slow = tmp_path / "agents" / "slow"
    slow.mkdir(parents=True)
    (slow / "child.py").write_text(_child("import time\ntime.sleep(3)\n"
                                          "return {'fitness': 0.9, 'descriptors': [0.7, 0.7]}"))
    db = tmp_path / "killed.db"
    config = tmp_path / "campaign.toml"
    _write_config(config, db, [slow], "pool", 8)
    label = campaign_label(db)
    driver = subprocess.Popen([python, "-m", "openended", "run", str(config), "--quiet"], env=cli_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not containers_left(label):
            time.sleep(0.2)
        assert containers_left(label), "the campaign started a container"
        time.sleep(0.5)  # the slow child is running in it
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    time.sleep(1)
    survivors = containers_left(label)
    assert survivors, "a kill -9 leaves the running child's container behind (the engine owns it)"

    resumed = subprocess.run([python, "-m", "openended", "resume", str(db), "--quiet"], env=cli_env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert containers_left(label) == []
    conn = sqlite3.connect(db)
    statuses = dict(conn.execute("SELECT id, status FROM agents"))
    conn.close()
    assert len(statuses) == 8 and statuses[1] == "archived", statuses
    # Ray's own worker processes of the killed driver are gone too (no orphaned evaluation left running).
    out = subprocess.run(["docker", "ps", "-q", "--filter", "label=openended.campaign"], capture_output=True,
                         text=True).stdout
    assert not set(out.split()) & set(survivors)


# The binpack forgery of issue 11: the agent writes a perfect result where the runner once read it,
# and into its evaluator's folder, then exits before the evaluator can score it.
BINPACK_FORGER = '''
import json, os
import numpy as np
perfect = json.dumps([{"fitness": 0.0, "descriptors": [1.0, 0.0], "valid": True, "feedback": "perfect"}])
for path in ("../.result.json", "/work/.result.json", "../result.json"):
    try:
        with open(path, "w") as fh:
            fh.write(perfect)
    except OSError:
        pass
print(json.dumps({"results": json.loads(perfect), "failure_kind": None}))
os._exit(0)

def priority(item, bins):
    return -bins
'''


@pytest.mark.parametrize("mode", ["pool", "fresh"])
def test_the_binpack_forgery_fails_as_forged_result(tmp_path, cli_env, python, docker_engine, mode):
    forger = tmp_path / "forger"
    forger.mkdir()
    (forger / "priority.py").write_text(BINPACK_FORGER)
    db = tmp_path / "binpack.db"
    config = tmp_path / "campaign.toml"
    config.write_text("\n".join([
        'task = "binpack"', f'db = "{db}"', "max_in_flight = 2", "grace_seconds = 0.0",
        "[sandbox]", 'kind = "docker"', f'mode = "{mode}"',
        "[mutation]", 'operator = "noop"', f'initial_agents = ["{forger}"]',
        "[budget]", "max_children = 4",
    ]) + "\n")
    proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet"], env=cli_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    conn = sqlite3.connect(db)
    rows = {r[0]: r[1:] for r in conn.execute("SELECT id, status, fail_stage, fail_reason, fitness FROM agents")}
    kinds = dict(conn.execute("SELECT agent_id, failure_kind FROM evaluations"))
    status, stage, reason, fitness = rows[1]
    assert (status, stage, kinds.get(1)) == ("failed", "invalid", "forged_result"), rows[1]
    assert reason.startswith("forged_result: ") and fitness is None
    best = conn.execute("SELECT MAX(fitness) FROM agents WHERE status = 'archived'").fetchone()[0]
    assert best is not None and best < -1.0, "the honest seed (best fit, about -4.6) is the best, not a forged 0.0"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert containers_left(campaign_label(db)) == []
