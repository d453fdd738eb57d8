"""Nodes of a real container cluster on which the docker sandbox cannot run (started without the host's
Docker socket) get no evaluations: the campaign probes every node when it starts and every node that joins,
keeps evaluations on the nodes whose engine and image are usable, and says which nodes it left out and why."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time

from cluster_nodes import own_cluster
from test_cluster import containers_created, outcomes
from test_node_kills import _finished

from openended.sandbox import campaign_label


def _lines(proc: subprocess.Popen) -> list[str]:
    """The campaign's output lines as they come (read by a thread)."""
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _until(what, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not what() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_nodes_without_a_docker_engine_get_no_evaluations(cluster, tmp_path):
    good = list(cluster.nodes)
    bad = [cluster.add_node(docker=False)]  # there when the campaign starts
    proc = None
    try:
        db = tmp_path / "unusable.db"
        since = time.time()
        # A budget it does not reach: it is stopped (SIGINT) once the node that joins was named and ten more
        # children are done, however long the join took.
        proc = subprocess.Popen(
            [sys.executable, "-m", "openended", "run", "--task", "maze-medium", "--db", str(db),
             "--budget", "1000", "--ray-address", cluster.address, "--sandbox", "docker",
             "--max-in-flight", "4", "--batch-size", "1", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            env={**cluster.driver_env(), "PYTHONUNBUFFERED": "1"})
        lines = _lines(proc)
        _until(lambda: _finished(db) >= 5 or proc.poll() is not None)
        bad.append(cluster.add_node(docker=False))  # one that joins mid-campaign

        def notes() -> list[str]:
            return [line.strip() for line in list(lines) if "gets no evaluations" in line]

        _until(lambda: len(notes()) >= 2 or proc.poll() is not None)
        named = _finished(db)
        _until(lambda: _finished(db) >= named + 10 or proc.poll() is not None)
        assert proc.poll() is None, "".join(lines)[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 0, "".join(lines)[-3000:]
        statuses, reasons = outcomes(db)
        assert _finished(db) >= named + 10 and not reasons, (statuses, reasons)  # no child failed
        print("\n".join(notes()))
        assert len(notes()) == 2, notes()  # each named once
        for node, note in zip(bad, notes(), strict=True):
            assert node.identity in note and "no Docker engine answers" in note, (node, note)
            # Nothing ran on it: a task that had would have left the shipped task folder in its work folder.
            assert cluster.node_files(node) == [], cluster.node_files(node)
        created = containers_created(campaign_label(db), since)
        assert set(created) == {n.identity for n in good}, created  # the usable nodes did all the work
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for node in bad:
            if node in cluster.nodes:
                cluster.kill_node(node)  # the tests after this one see the cluster as it was


def test_a_cluster_with_no_usable_node_stops_before_any_evaluation(tmp_path):
    """A head of no CPU (its engine usable) and one node without the Docker socket: nothing could evaluate."""
    with own_cluster(0) as own:
        bad = own.add_node(docker=False)
        db = tmp_path / "none.db"
        done = subprocess.run(
            [sys.executable, "-m", "openended", "run", "--task", "maze-medium", "--db", str(db), "--budget", "10",
             "--ray-address", own.address, "--sandbox", "docker", "--quiet"],
            capture_output=True, text=True, env=own.driver_env(), cwd=tmp_path, timeout=300)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        error = done.stderr.strip().splitlines()[-1]
        assert error.startswith("error: key 'sandbox.kind': no alive node of the cluster with a CPU can run"), error
        assert "no Docker engine answers" in error and "usable, but has no CPU" in error, error
        assert bad.identity in done.stdout and "gets no evaluations" in done.stdout, done.stdout[-2000:]
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
            assert con.execute("SELECT count(*) FROM evaluations").fetchone() == (0,)
