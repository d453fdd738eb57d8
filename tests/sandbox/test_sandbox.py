"""The sandboxes on their own: docker (pool and fresh) and process, against real tasks and a real engine."""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import ROOT, SANDBOX_IMAGE, containers_left, labelled_image

from openended.config import ConfigError, load_config
from openended.sandbox import FailureKind, Limits, SandboxSpec, resolve, sweep
from openended.sandbox.docker_sandbox import DockerSandbox
from openended.sandbox.engine import client, container_options
from openended.sandbox.process import ProcessSandbox

HOSTILE = ROOT / "tests" / "tasks" / "hostile"


def _agent(body: str) -> dict[str, bytes]:
    return {"child.py": ("def run():\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")).encode()}


OK = _agent("return {'fitness': 0.25, 'descriptors': [0.1, 0.2], 'feedback': 'fine'}")
# A container's hostname is (the start of) its id: which container ran an evaluation.
HOSTNAME = _agent("import socket\nreturn {'fitness': 0.25, 'descriptors': [0, 0], 'feedback': socket.gethostname()}")


def _docker(mode="pool", label="test-sandbox", pool_max=3, **limits) -> DockerSandbox:
    spec = SandboxSpec(kind="docker", mode=mode, campaign_label=label, pool_max_evaluations=pool_max,
                       limits=Limits(**{"timeout_s": 3, "memory_mb": 128, "pids": 32, **limits}))
    return DockerSandbox(spec, str(HOSTILE))




def test_pool_replaces_its_container_after_a_failure_and_after_n_evaluations(docker_engine):
    box = _docker(label="test-pool")
    try:
        hosts = []
        for _ in range(4):
            out = box.evaluate([HOSTNAME], {})
            assert out.failure_kind is None, out.reason
            hosts.append(out.results[0]["feedback"])
        assert hosts[0] == hosts[1] == hosts[2] != hosts[3], "a new container after pool_max_evaluations (3)"
        crash = box.evaluate([_agent("raise ValueError('boom')")], {})
        assert (crash.failure_kind, crash.fail_stage) == (FailureKind.CRASH, "evaluation")
        assert "ValueError: boom" in crash.reason and "boom" in crash.stderr_tail
        after = box.evaluate([HOSTNAME], {})
        assert after.failure_kind is None and after.results[0]["feedback"] not in hosts, "a failure discards it"
        # A container swept away between evaluations (the end of a campaign) is replaced, not a failure.
        assert sweep("test-pool") >= 1
        assert box.evaluate([OK], {}).failure_kind is None
    finally:
        box.close()
    assert containers_left("test-pool") == []


def test_fresh_mode_leaves_no_container_and_keeps_output_tails(docker_engine):
    box = _docker(mode="fresh", label="test-fresh")
    try:
        out = box.evaluate([_agent("print('hello from the child')\nreturn {'fitness': 1, 'descriptors': [0, 0]}")], {})
        assert out.failure_kind is None and "hello from the child" in out.stdout_tail
        hosts = [box.evaluate([HOSTNAME], {}).results[0]["feedback"] for _ in range(3)]
        assert len(set(hosts)) == 3, "every evaluation in a container of its own"
        timeout = box.evaluate([_agent("import time\ntime.sleep(60)")], {})
        assert timeout.failure_kind == FailureKind.TIMEOUT and timeout.fail_stage == "timeout"
        assert 3 <= timeout.seconds < 15
    finally:
        box.close()
    assert containers_left("test-fresh") == []


def test_process_sandbox_limits_and_clean_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENENDED_SECRET_API_KEY", "sk-should-not-leak")
    box = ProcessSandbox(SandboxSpec(kind="process", limits=Limits(timeout_s=2, output_bytes=10_000)), str(HOSTILE))
    try:
        env = box.evaluate([_agent("import os\nreturn {'fitness': 0.0, 'descriptors': [0, 0], 'feedback': "
                                   "os.environ.get('OPENENDED_SECRET_API_KEY', 'absent')}")], {})
        assert env.results[0]["feedback"] == "absent"
        assert box.evaluate([_agent("while True: pass")], {}).failure_kind == "timeout"
        assert box.evaluate([_agent("print('x' * 100000)")], {}).failure_kind == "output_limit"
        assert box.evaluate([_agent("import os\nos._exit(0)")], {}).failure_kind == "no_result"
        batch = box.evaluate([OK, OK, OK], {})
        assert [r["fitness"] for r in batch.results] == [0.25] * 3
    finally:
        box.close()


def test_auto_falls_back_to_process_with_a_note_and_explicit_docker_refuses(tmp_path):
    cfg = load_config(None, {"sandbox.image": "openended-no-such-image:0"})
    spec, note = resolve(cfg.sandbox, task_limits={"timeout_s": 7}, db_path=tmp_path / "x.db")
    assert spec.kind == "process" and "does NOT isolate" in note and spec.limits.timeout_s == 7
    from openended.engine import Campaign

    bad = load_config(None, {"db": str(tmp_path / "d.db"), "sandbox.kind": "docker",
                             "sandbox.image": "openended-no-such-image:0"})
    with pytest.raises(ConfigError, match="sandbox.kind.*(engine|not present)"):
        Campaign(bad)


def test_docker_with_an_image_of_another_numpy_says_so(docker_engine, tmp_path):
    """The image's numpy rounds a child's floating point: a campaign is told when it is not this machine's."""
    import uuid

    import numpy

    from openended.sandbox.engine import NUMPY_LABEL

    cfg = load_config(None, {"sandbox.kind": "docker", "sandbox.image": SANDBOX_IMAGE})
    spec, note = resolve(cfg.sandbox, task_limits={}, db_path=tmp_path / "x.db")
    assert spec.kind == "docker" and note is None  # built here, under this machine's numpy
    tag = f"openended-test-tiny:{uuid.uuid4().hex[:8]}"
    try:
        labelled_image(tag, **{NUMPY_LABEL: "1.0.0"})
        cfg = load_config(None, {"sandbox.kind": "auto", "sandbox.image": tag})
        spec, note = resolve(cfg.sandbox, task_limits={}, db_path=tmp_path / "x.db")
        assert spec.kind == "docker" and f"carries numpy 1.0.0, this machine has numpy {numpy.__version__}" in note
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_sandbox_check_reports_every_limit_enforced(docker_engine, cli_env, python):
    proc = subprocess.run([python, "-m", "openended", "sandbox", "check", "--json"], env=cli_env,
                          capture_output=True, text=True, timeout=180)
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert proc.returncode == 0, checks
    assert {"engine", "image", "no network", "read-only root", "pids limit", "memory limit",
            "no host environment", "non-root user", "seccomp profile", "private IPC namespace", "small /dev/shm",
            "no setuid files", "neutral mount sources"} <= set(checks)
    assert "io_uring_setup: EPERM" in checks["seccomp profile"]["detail"]
    assert all(c["ok"] for c in checks.values())


# A child that tries to forge the runner's report on the container's stdout (the host's channel),
# to read the channel, and to stop or kill the runner; it says what was refused.
FORGER = _agent("""
    import json, os, signal
    job = "/agents/" + os.listdir("/agents")[0]
    fake = json.dumps({"results": [{"fitness": 99.0, "descriptors": [0.9, 0.9]}], "failure_kind": None,
                       "reason": None, "exit_status": 0, "seconds": 0.0, "stdout_tail": "", "stderr_tail": "",
                       "job": job}) + "\\n"
    refused = []
    for path in ("/proc/1/fd/1", "/proc/%d/fd/1" % os.getppid(), "/proc/1/fd/2", "/proc/1/mem"):
        try:
            with open(path, "w") as fh:
                fh.write(fake)
        except OSError:
            refused.append(path)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGSTOP, signal.SIGKILL):
        os.kill(1, sig)
    channel = os.read(0, 100).decode()
    print(fake)
    return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": json.dumps([refused, channel])}
""")

# Leaves a daemon (in a session of its own, out of its process group) and files in /tmp and /work.
LITTERER = _agent("""
    import os, time
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            while True:
                with open("/tmp/daemon", "w") as fh:
                    fh.write(str(time.time()))
                time.sleep(0.01)
        os._exit(0)
    os.waitpid(pid, 0)
    for path in ("/tmp/left", "/work/left"):
        with open(path, "w") as fh:
            fh.write("x")
    time.sleep(0.1)
    return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": __import__("socket").gethostname()}
""")

LOOKER = _agent("""
    import json, os, socket
    others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid()))
    seen = {"host": socket.gethostname(), "others": others, "tmp": os.listdir("/tmp"),
            "work": [n for n in os.listdir("/work") if n != os.path.basename(os.getcwd())]}
    return {"fitness": 0.5, "descriptors": [0.1, 0.1], "feedback": json.dumps(seen)}
""")


@pytest.mark.parametrize("mode", ["pool", "fresh"])
def test_a_child_cannot_forge_the_report_nor_reach_the_runner(docker_engine, mode):
    box = _docker(mode=mode, label=f"test-forge-{mode}")
    try:
        out = box.evaluate([FORGER], {})
        assert out.failure_kind is None, out.reason
        assert out.results[0]["fitness"] == 0.5, "the runner's report, not the forged one"
        refused, channel = json.loads(out.results[0]["feedback"])
        assert len(refused) == 4, refused
        assert channel == "", "the child's stdin is not the runner's"
        assert '"fitness": 99.0' in out.stdout_tail, "what it printed went to its own captured stdout"
        # The runner shrugged off the signals: it still serves.
        assert box.evaluate([OK], {}).results[0]["fitness"] == 0.25
    finally:
        box.close()
    assert containers_left(f"test-forge-{mode}") == []


def test_pool_evaluations_see_nothing_the_previous_one_left(docker_engine):
    box = _docker(label="test-litter")
    try:
        first = box.evaluate([LITTERER], {})
        assert first.failure_kind is None, first.reason
        second = box.evaluate([LOOKER], {})
        seen = json.loads(second.results[0]["feedback"])
        assert seen["host"] == first.results[0]["feedback"], "the same pool container"
        assert seen == {"host": seen["host"], "others": [], "tmp": [], "work": []}
    finally:
        box.close()


def test_pool_container_killed_during_an_evaluation_is_a_sandbox_error_then_replaced(docker_engine):
    box = _docker(label="test-killed")
    try:
        victim = box.evaluate([HOSTNAME], {}).results[0]["feedback"]  # the pool container's id (its start)
        threading.Timer(0.5, lambda: subprocess.run(["docker", "kill", victim], capture_output=True)).start()
        out = box.evaluate([_agent("import time\ntime.sleep(2.5)\nreturn {'fitness': 1.0, 'descriptors': [0, 0]}")],
                           {})
        assert (out.failure_kind, out.fail_stage) == ("sandbox_error", "sandbox"), out
        assert "no report" in out.reason and out.exit_status == 137
        assert box.evaluate([OK], {}).failure_kind is None
    finally:
        box.close()
    assert containers_left("test-killed") == []


def test_sweep_is_not_upset_by_containers_removed_while_it_lists(docker_engine):
    api = client()
    spec = SandboxSpec(kind="docker", campaign_label="test-sweep-race")
    with tempfile.TemporaryDirectory() as tmp:
        opts = container_options(spec, tmp, Path(tmp))
        opts.pop("detach")
        containers = [api.containers.create(command=["/bin/true"], **opts) for _ in range(8)]
        remover = threading.Thread(target=lambda: [c.remove(force=True) for c in containers])
        remover.start()
        while remover.is_alive():
            assert sweep("test-sweep-race", only_dead_owners=True) == 0, "their owner (this process) is alive"
        remover.join()
    assert containers_left("test-sweep-race") == []
