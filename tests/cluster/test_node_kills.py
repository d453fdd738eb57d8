"""Worker nodes of a real container cluster (tests/cluster/cluster_nodes.py) killed mid-campaign: a maze
campaign with the Docker sandbox loses nodes at three random moments (``docker kill`` of a node's
container, or SIGKILL of its raylet alone; at the last moment every node standing) and a node joins after
each, taking part before the next moment. Every child is recorded exactly
once, none fails for a node's death, the store's integrity holds, the nodes that joined mid-campaign
evaluate children (their sandbox containers' ``openended.host`` labels) and finish the campaign."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter

from cluster_nodes import own_cluster
from conftest import containers_left, count_in
from test_cluster import containers_created

from archive_db.integrity import check_integrity
from openended.sandbox import campaign_label

BUDGET = 400
KILLS = 3
# How long a node that joined may take to get its first evaluation (its probe, its first Ray worker) before the
# test goes on: each joined node takes part before the next kill (a kill right after a join, on a fast machine,
# left the joined node unused and the campaign done before its probe answered).
JOIN_SECONDS = 120


def _finished(db) -> int:
    return count_in(db, "SELECT count(*) FROM agents WHERE status NOT IN ('proposed', 'mutated')", timeout=1)


def _wait_used(node, joined_at: float, label: str, proc: subprocess.Popen) -> float | None:
    """Seconds from ``node`` joining to its first sandbox container of the campaign (None: the campaign ended,
    or time was up, first). Only containers created since it joined count, and only while it lives: a node's
    identity names its PID namespace, whose number the kernel hands out again once a killed node's is gone."""
    deadline = time.monotonic() + JOIN_SECONDS
    while proc.poll() is None and time.monotonic() < deadline:
        if containers_created(label, joined_at)[node.identity]:
            return round(time.time() - joined_at, 1)
        time.sleep(0.5)
    return None


def test_nodes_killed_at_three_random_moments_cost_no_child(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"kill moments from seed {seed}")
    with own_cluster(2) as cluster:
        db = tmp_path / "kills.db"
        # One child per task: a task lost for anything but its node's death fails its child (a lost batch
        # would be re-run one child at a time, which hides how it was lost).
        since = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "openended", "run", "--task", "maze-medium", "--db", str(db),
             "--budget", str(BUDGET), "--ray-address", cluster.address, "--sandbox", "docker",
             "--max-in-flight", "4", "--batch-size", "1", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.driver_env(), cwd=tmp_path)
        kills, joined, waits = [], [], []
        label = campaign_label(db)
        # Each kill once the node that joined after the kill before has taken part (4-16 s after it joined,
        # here: 50-90 children), at a random count of children finished since, a random fraction of a second
        # later: mid-batch, mid-container, anywhere.
        for k in range(KILLS):
            target = _finished(db) + rng.randint(int(BUDGET * 0.02), int(BUDGET * 0.07))
            deadline = time.monotonic() + 300
            while _finished(db) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.random())
            assert proc.poll() is None, f"the campaign ended before kill {k + 1}: {proc.stdout.read()}"
            # The oldest node: the last nodes standing are ones that joined mid-campaign. At the last moment every
            # node standing dies, so the rest of the campaign runs on the node that joins after it (a survivor
            # could otherwise finish a fast campaign before the joined node's probe answered).
            victims = list(cluster.nodes) if k == KILLS - 1 else [cluster.nodes[0]]
            how = "raylet" if k == 1 else "docker kill"
            at = _finished(db)
            for victim in victims:
                cluster.kill_node(victim, raylet=how == "raylet")
            kills.append((how, [v.name for v in victims], at))
            joining = time.time()
            joined.append(cluster.add_node())
            waits.append((joined[-1].name, _wait_used(joined[-1], joining, label, proc), _finished(db)))
        out, _ = proc.communicate(timeout=600)
        print("kills (how, nodes, children finished):", kills, f"campaign {time.time() - since:.0f}s")
        print("joined nodes' first container (node, seconds after joining, children finished):", waits)
        assert proc.returncode == 0, out[-4000:]
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT id, status, fail_reason FROM agents ORDER BY id").fetchall()
            evaluations = Counter(a for (a,) in con.execute("SELECT agent_id FROM evaluations"))
            assert check_integrity(con).ok
        finally:
            con.close()
        assert [r[0] for r in rows] == list(range(BUDGET)), "a child lost or recorded twice"
        assert [r for r in rows if r[1] == "failed"] == [], "a child failed (for its node's death?)"
        assert all(n == 1 for n in evaluations.values()), "a child's evaluation recorded twice"
        assert set(evaluations) == set(range(BUDGET)), "a child without its evaluation"
        # every node that joined mid-campaign evaluated children (seen while it lived: see _wait_used)
        assert all(seconds is not None for _, seconds, _ in waits), (waits, out[-2000:])
        created = containers_created(label, since)
        assert not containers_left(label)
        notes = [line for line in out.splitlines() if "node" in line and "(raylet)" not in line]
        print("sandbox containers per node:", dict(created), "\n", "\n".join(notes))


def test_the_last_worker_node_killed_its_queued_tasks_go_to_a_node_that_joins(tmp_path):
    """One worker node and a head of no CPU whose engine is usable. The node dies mid-campaign with tasks queued
    for it (4 out, 1 CPU); a node joins. Those tasks could run nowhere else but the head, which has no CPU: once
    Ray reports the death they come back as lost and go out again to the new node, none waiting for its
    deadline and failing."""
    with own_cluster(1) as cluster:
        db = tmp_path / "last.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "openended", "run", "--task", "maze-medium", "--db", str(db),
             "--budget", "40", "--ray-address", cluster.address, "--sandbox", "docker",
             "--max-in-flight", "4", "--batch-size", "1", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.driver_env(), cwd=tmp_path)
        deadline = time.monotonic() + 300
        while _finished(db) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the campaign ended before the kill: " + proc.stdout.read()
        cluster.kill_node(cluster.nodes[0])
        joining = time.time()
        joined = cluster.add_node()
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT id, status, fail_reason FROM agents ORDER BY id").fetchall()
            assert check_integrity(con).ok
        finally:
            con.close()
        assert [r[0] for r in rows] == list(range(40)) and [r for r in rows if r[1] == "failed"] == [], rows
        assert "every node it could run on left the cluster" in out, out[-4000:]
        assert containers_created(campaign_label(db), joining)[joined.identity] >= 1  # (see _wait_used)
