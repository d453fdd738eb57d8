"""Campaigns on a real multi-node Ray cluster whose worker nodes share nothing with the driver but Ray
(tests/cluster/cluster_nodes.py): a head on the host, two worker nodes in containers, the Docker
sandbox on the nodes (the host's engine), the task folder and the runner shipped through Ray."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from cluster_nodes import Cluster
from conftest import TOY, containers_left

from openended.sandbox import campaign_label
from openended.sandbox.engine import IMAGE_VERSION

BUDGET = 24


def run_campaign(c: Cluster, task: str, db: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a driver on the host, joining the cluster."""
    cmd = [sys.executable, "-m", "openended", "run", "--task", task, "--db", str(db), "--budget", str(BUDGET),
           "--ray-address", c.address, "--sandbox", "docker", "--max-in-flight", "4", "--batch-size", "2",
           "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, env=c.driver_env(), cwd=cwd, timeout=600)


def containers_created(label: str, since: float) -> Counter:
    """How many sandbox containers of a campaign each node identity created since ``since``."""
    out = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                          "--filter", "type=container", "--filter", "event=create", "--filter",
                          f"label=openended.campaign={label}", "--format", "{{json .Actor.Attributes}}"],
                         capture_output=True, text=True, check=True).stdout
    return Counter(json.loads(line).get("openended.host") for line in out.splitlines() if line.strip())


def outcomes(db: Path) -> tuple[Counter, list[str]]:
    with sqlite3.connect(db) as con:
        statuses = Counter(dict(con.execute("SELECT status, count(*) FROM agents GROUP BY status").fetchall()))
        reasons = [r for (r,) in con.execute("SELECT fail_reason FROM agents WHERE status = 'failed'")]
    return statuses, reasons


def can_see(c: Cluster, path: Path | str) -> list[str]:
    """The nodes on which ``path`` exists."""
    return [n.name for n in c.nodes
            if subprocess.run(["docker", "exec", n.name, "test", "-e", str(path)]).returncode == 0]


def test_maze_and_a_driver_only_task_on_two_nodes_that_share_nothing(cluster, tmp_path):
    # A user's task folder that exists only here, on the driver.
    user_task = tmp_path / "my-task"
    shutil.copytree(TOY, user_task)
    assert not can_see(cluster, user_task) and not can_see(cluster, tmp_path)
    assert not can_see(cluster, Path(__file__).resolve().parents[2])  # nor the checkout
    timings = {}
    for name, task in (("maze", "maze-medium"), ("user", f"{user_task}:plain")):
        db = tmp_path / f"{name}.db"
        since = time.time()
        done = run_campaign(cluster, task, db, tmp_path)
        timings[name] = round(time.time() - since, 1)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert not can_see(cluster, db)
        statuses, reasons = outcomes(db)
        assert sum(statuses.values()) == BUDGET, statuses
        assert not reasons, reasons  # no child failed: each task, its evaluator and the runner reached the nodes
        assert statuses["archived"] >= 1
        label = campaign_label(db)
        created = containers_created(label, since)
        # every worker node evaluated children (the head has no CPUs: nothing else could)
        for node in cluster.nodes:
            assert created[node.identity] >= 1, (node.name, created)
        assert set(created) == {n.identity for n in cluster.nodes}, created
        assert not containers_left(label)
    for node in cluster.nodes:  # the shipped tasks, cached on the node by content hash (one copy each)
        cached = [p for p in cluster.node_files(node) if len(p.parts) == 4 and p.parts[1] == "tasks"]
        assert {p.parts[3] for p in cached} >= {"maze", "my-task"}, cached
    print(f"cluster start {cluster.start_seconds:.1f}s, campaigns {timings}")


def test_cluster_check_probes_every_node_through_ray(cluster):
    done = subprocess.run([sys.executable, "-m", "openended", "cluster", "check", "--ray-address", cluster.address,
                           "--json"], capture_output=True, text=True, env=cluster.driver_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reports = json.loads(done.stdout)
    assert len(reports) == 1 + len(cluster.nodes)  # the head too: its engine answers for the driver's machine
    assert {r["identity"] for r in reports if not r["head"]} == {n.identity for n in cluster.nodes}
    assert all(r["ok"] and r["image_version"] == IMAGE_VERSION and r["engine"] for r in reports), reports
