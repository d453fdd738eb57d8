"""The sandboxes on their own: docker (pool and fresh) and process, against real tasks and a real engine."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from openended.config import ConfigError, load_config
from openended.sandbox import Limits, SandboxSpec, resolve
from openended.sandbox.docker_engine import DockerSandbox, sweep
from openended.sandbox.process import ProcessSandbox
from openended.tasks import load_task

from conftest import ROOT

HOSTILE = ROOT / "tests" / "tasks" / "hostile"


def _agent(body: str) -> dict[str, bytes]:
    return {"child.py": ("def run():\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")).encode()}


OK = _agent("return {'fitness': 0.25, 'descriptors': [0.1, 0.2], 'feedback': 'fine'}")


def _docker(mode="pool", label="test-sandbox", **limits) -> DockerSandbox:
    spec = SandboxSpec(kind="docker", mode=mode, campaign_label=label,
                       limits=Limits(**{"timeout_s": 3, "memory_mb": 128, "pids": 32, **limits}),
                       pool_max_evaluations=limits.pop("pool_max", 500) if "pool_max" in limits else 3)
    return DockerSandbox(spec, str(HOSTILE))


def _labelled(label: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=openended.campaign={label}"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_maze_results_are_the_same_in_docker_process_and_inprocess(docker_engine):
    task = load_task("maze-medium")
    seed = task.seed_files()
    from openended.tasks import evaluator_module

    expected = evaluator_module(task).evaluate_batch([seed], task.evaluate_args)
    spec = SandboxSpec(kind="docker", campaign_label="test-maze", limits=Limits(timeout_s=30))
    docker_box = DockerSandbox(spec, str(task.root))
    process_box = ProcessSandbox(SandboxSpec(kind="process", limits=Limits(timeout_s=30)), str(task.root))
    try:
        for box in (docker_box, process_box):
            out = box.evaluate([seed, seed], task.evaluate_args)
            assert out.failure_kind is None, out.reason
            # The image's numpy may differ from the host's in the last bits of a float.
            for got, want in zip(out.results, expected * 2):
                assert got["fitness"] == pytest.approx(want["fitness"], rel=1e-9)
                assert got["descriptors"] == pytest.approx(want["descriptors"], rel=1e-9)
                assert got["feedback"] == want["feedback"]
    finally:
        docker_box.close()
        process_box.close()


def test_pool_replaces_its_container_after_a_failure_and_after_n_evaluations(docker_engine):
    box = _docker(label="test-pool")
    try:
        ids = []
        for _ in range(4):
            assert box.evaluate([OK], {}).results[0]["fitness"] == 0.25
            ids.append(box._container.id)
        assert ids[0] == ids[1] == ids[2] != ids[3], "a new container after pool_max_evaluations (3)"
        crash = box.evaluate([_agent("raise ValueError('boom')")], {})
        assert (crash.failure_kind, crash.fail_stage) == ("crash", "evaluation")
        assert "ValueError: boom" in crash.reason and "boom" in crash.stderr_tail
        assert box._container is None, "a failure discards the container"
        assert box.evaluate([OK], {}).failure_kind is None
        # A container swept away between evaluations (the end of a campaign) is replaced, not a failure.
        assert sweep("test-pool") == 1
        assert box.evaluate([OK], {}).failure_kind is None
    finally:
        box.close()
    assert _labelled("test-pool") == []


def test_fresh_mode_leaves_no_container_and_keeps_output_tails(docker_engine):
    box = _docker(mode="fresh", label="test-fresh")
    try:
        out = box.evaluate([_agent("print('hello from the child')\nreturn {'fitness': 1.0, 'descriptors': [0, 0]}")], {})
        assert out.failure_kind is None and "hello from the child" in out.stdout_tail
        timeout = box.evaluate([_agent("import time\ntime.sleep(60)")], {})
        assert timeout.failure_kind == "timeout" and timeout.fail_stage == "timeout"
        assert 3 <= timeout.seconds < 15
    finally:
        box.close()
    assert _labelled("test-fresh") == []


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
    from openended.campaign import Campaign

    bad = load_config(None, {"db": str(tmp_path / "d.db"), "sandbox.kind": "docker",
                             "sandbox.image": "openended-no-such-image:0"})
    with pytest.raises(ConfigError, match="sandbox.kind.*(engine|not present)"):
        Campaign(bad)


def test_sandbox_check_reports_every_limit_enforced(docker_engine, cli_env, python):
    proc = subprocess.run([python, "-m", "openended", "sandbox", "check", "--json"], env=cli_env,
                          capture_output=True, text=True, timeout=180)
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert proc.returncode == 0, checks
    assert {"engine", "image", "no network", "read-only root", "pids limit", "memory limit",
            "no host environment", "non-root user"} <= set(checks)
    assert all(c["ok"] for c in checks.values())
