"""A worker node that dies mid-campaign costs no child: its in-flight children go out again on the nodes
left, with their recorded seeds, none failed for the node's death and none recorded twice; a node that
joins mid-campaign gets work."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time

from conftest import TOY
from test_reproducible import _count

from archive_db.integrity import check_integrity

BUDGET = 100


def _slow_task(tmp_path) -> str:
    """The toy task with one-second evaluations: a node is always in the middle of one when it is killed."""
    folder = tmp_path / "toy"
    shutil.copytree(TOY, folder)
    toml = folder / "task.toml"
    toml.write_text(toml.read_text().replace("evaluate_args = { sleep_s = 0.05 }", "evaluate_args = { sleep_s = 1.0 }"))
    return f"{folder}:slow"


def _rows(db) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, status, fail_reason FROM agents ORDER BY id").fetchall()
    finally:
        con.close()


def test_a_node_killed_mid_campaign_costs_no_child_and_a_new_node_gets_work(tmp_path, python, cli_env):
    from ray.cluster_utils import Cluster

    # A cluster of this test's own (the session's Ray stays up for the tests after it). Its head has
    # no CPU: every evaluation runs on a worker node.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        first = cluster.add_node(num_cpus=1)
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        db = tmp_path / "nodes.db"
        proc = subprocess.Popen(
            [python, "-m", "openended", "run", "--task", _slow_task(tmp_path), "--db", str(db), "--budget", str(BUDGET),
             "--sandbox", "inprocess", "--max-in-flight", "8", "--batch-size", "1", "--seed", "2",
             "--ray-address", cluster.address, "--quiet"],
            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def after(finished: int) -> None:
            deadline = time.monotonic() + 180
            while _count(db) < finished and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, "the campaign ended before the node was killed"

        # Three kills, each of a node with tasks running and queued (8 out, 2 nodes); after each a node
        # joins, so the last ones standing are nodes that joined mid-campaign.
        nodes = [first, second]
        for finished in (10, 30, 50):
            after(finished)
            cluster.remove_node(nodes.pop(0), allow_graceful=False)  # SIGKILL its raylet and its workers
            nodes.append(cluster.add_node(num_cpus=1))
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        rows = _rows(db)
        assert [r[0] for r in rows] == list(range(BUDGET))  # every child once
        assert [r for r in rows if r[1] == "failed"] == [], "a child failed for its node's death"
        # A kill usually lands on running tasks (then the campaign says so and status counts it; without the
        # re-dispatch their children failed), but Ray may also re-place work a dead node had only leased.
        status = subprocess.run([python, "-m", "openended", "status", str(db), "--json"], env=cli_env,
                                capture_output=True, text=True, timeout=60)
        assert (json.loads(status.stdout)["nodes_lost"] > 0) == ("a Ray node died under a task" in out)
        con = sqlite3.connect(db)
        try:
            assert check_integrity(con).ok
        finally:
            con.close()
    finally:
        cluster.shutdown()
