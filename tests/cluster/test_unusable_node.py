"""Nodes of a real container cluster on which the docker sandbox cannot run (started without the host's
Docker socket) get no evaluations: the campaign probes every node when it starts and every node that joins,
keeps evaluations on the nodes whose engine and image are usable, and says which nodes it left out and why."""

from __future__ import annotations

import subprocess
import sys
import time

from cluster_nodes import cluster  # noqa: F401  (the session fixture)
from test_cluster import containers_created, outcomes
from test_node_kills import _finished

from openended.sandbox import campaign_label

BUDGET = 60


def test_nodes_without_a_docker_engine_get_no_evaluations(cluster, tmp_path):  # noqa: F811
    good = list(cluster.nodes)
    bad = [cluster.add_node(docker=False)]  # there when the campaign starts
    try:
        db = tmp_path / "unusable.db"
        since = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "openended", "run", "--task", "maze-medium", "--db", str(db),
             "--budget", str(BUDGET), "--ray-address", cluster.address, "--sandbox", "docker",
             "--max-in-flight", "4", "--batch-size", "1", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.driver_env(), cwd=tmp_path)
        deadline = time.monotonic() + 300
        while _finished(db) < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the campaign ended before a node joined: " + proc.stdout.read()
        bad.append(cluster.add_node(docker=False))  # one that joins mid-campaign
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        statuses, reasons = outcomes(db)
        assert sum(statuses.values()) == BUDGET and not reasons, (statuses, reasons)  # no child failed
        notes = [line for line in out.splitlines() if "gets no evaluations" in line]
        print("\n".join(notes))
        assert len(notes) == 2, notes  # each named once
        for node, note in zip(bad, notes, strict=True):
            assert node.identity in note and "no Docker engine answers" in note, (node, note)
            # Nothing ran on it: a task that had would have left the shipped task folder in its work folder.
            assert cluster.node_files(node) == [], cluster.node_files(node)
        created = containers_created(campaign_label(db), since)
        assert set(created) == {n.identity for n in good}, created  # the usable nodes did all the work
    finally:
        for node in bad:
            if node in cluster.nodes:
                cluster.kill_node(node)  # the tests after this one see the cluster as it was
