"""Campaigns as users run them: a CLI subprocess killed with -9 or interrupted, then resumed."""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import containers_left, count_in, toy

BUDGET = 240


def _start(python, env, db, ray_address, *extra, variant="slow", budget=BUDGET):
    cmd = [python, "-m", "openended", "run", "--task", toy(variant), "--db", str(db), "--budget", str(budget),
           "--sandbox", "inprocess",
           "--max-in-flight", "1", "--batch-size", "4", "--seed", "7", "--ray-address", ray_address, "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _count(db) -> int:
    return count_in(db, "SELECT COUNT(*) FROM agents")

def _wait_for_rows(db, n, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(db) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"campaign exited early: {proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {timeout}s")


def _rows(db):
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return con.execute(
            "SELECT id, parent_id, operator, seed, status, genome_hash, fitness FROM agents ORDER BY id"
        ).fetchall()
    finally:
        con.close()


def test_kill_9_at_random_moments_then_resume_loses_nothing(tmp_path, ray_address, python, cli_env):
    # The reference: the same campaign, never interrupted.
    ref = tmp_path / "ref.db"
    proc = _start(python, cli_env, ref, ray_address)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    expected = _rows(ref)
    assert len(expected) == BUDGET

    db = tmp_path / "killed.db"
    rng = random.Random(1234)
    for _ in range(4):
        proc = _start(python, cli_env, db, ray_address)
        # A random moment measured in progress, not seconds: a fast machine must not finish the
        # campaign before the kill lands. Each session covers at most a third of what is left.
        done = _count(db)
        _wait_for_rows(db, rng.randint(done + 1, done + max(1, (BUDGET - done) // 3)), proc)
        time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, "the campaign ended before the kill"
        proc.kill()
        proc.wait(timeout=30)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    status = subprocess.run([python, "-m", "openended", "status", str(db), "--json"], env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["status"] == "interrupted"
    proc = subprocess.run([python, "-m", "openended", "resume", str(db), "--ray-address", ray_address, "--quiet"],
                          env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(db)
    assert [r[0] for r in rows] == list(range(BUDGET)), "every proposed child present exactly once"
    assert not [r for r in rows if r[4] in ("proposed", "mutated")]
    # Same parents, seeds, genomes and fitness as if it had never stopped.
    assert rows == expected


def test_sigint_exits_zero_and_resumes(tmp_path, ray_address, python, cli_env):
    db = tmp_path / "int.db"
    proc = _start(python, cli_env, db, ray_address)
    _wait_for_rows(db, 20, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped (signal)" in out
    n = _count(db)
    assert 20 <= n < BUDGET
    proc = subprocess.run([python, "-m", "openended", "resume", str(db), "--ray-address", ray_address, "--quiet"],
                          env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(db)
    assert [r[0] for r in rows] == list(range(BUDGET))
    assert all(r[4] in ("archived", "rejected") for r in rows)


def test_a_second_sigint_stops_at_once_and_says_so(tmp_path, ray_address, python, cli_env):
    db = tmp_path / "twice.db"
    # one task out at a time, and a child that never returns: the campaign stalls with children in flight
    config = tmp_path / "grace.toml"
    config.write_text("grace_seconds = 120\n")
    proc = _start(python, cli_env, db, ray_address, str(config), variant="hangy")
    _wait_for_rows(db, 1, proc)
    seen, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 1.5:
        assert proc.poll() is None, proc.stdout.read()
        n = _count(db)
        if n != seen:
            seen, still_since = n, time.monotonic()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert time.monotonic() - started < 30, "the second signal did not cut the 120 s grace short"
    assert proc.returncode == 0, out
    assert "stop requested: finishing in-flight children, then stopping (Ctrl-C again stops at once)" in out
    assert re.search(r"a second stop request: stopping now; \d+ children in flight are left for resume", out), out


def test_status_json_while_running(tmp_path, ray_address, python, cli_env):
    db = tmp_path / "live.db"
    # A budget it cannot spend before the checks below are done, however fast the machine: SIGTERM ends it.
    proc = _start(python, cli_env, db, ray_address, budget=100_000)
    try:
        _wait_for_rows(db, 30, proc)
        out = subprocess.run([python, "-m", "openended", "status", str(db), "--json"], env=cli_env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        for key in ("children_done", "children_failed", "archive_size", "qd_score", "coverage", "best_fitness",
                    "status"):
            assert key in info
        assert info["status"] == "running"
        assert info["children_proposed"] >= 30
        # A second driver on the same database is refused while the first runs.
        second = subprocess.run([python, "-m", "openended", "resume", str(db), "--ray-address", ray_address],
                                env=cli_env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "being run by another process" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


@pytest.mark.parametrize("sandbox", ["inprocess", "docker"])
def test_campaign_on_a_two_node_cluster(tmp_path, python, cli_env, sandbox, request):
    from ray.cluster_utils import Cluster

    if sandbox == "docker":
        request.getfixturevalue("docker_engine")

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        db = tmp_path / "cluster.db"
        proc = subprocess.run(
            [python, "-m", "openended", "run", "--task", toy("plain"), "--db", str(db), "--budget", "200",
             "--sandbox", sandbox,
             "--max-in-flight", "4", "--batch-size", "5", "--ray-address", cluster.address, "--quiet"],
            env=cli_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = _rows(db)
        assert len(rows) == 200 and all(r[4] in ("archived", "rejected") for r in rows)
        if sandbox == "docker":
            from openended.sandbox import campaign_label

            assert containers_left(campaign_label(db)) == [], "the campaign's containers are removed at its end"
    finally:
        cluster.shutdown()
