"""Every evaluated child is counted under the Ray node that ran it, in the driver state stored with its outcome:
the counts add up to the children stored, across a kill of the driver and a resume, and name every node
that worked; ``openended status`` shows them."""

from __future__ import annotations

import json
import subprocess

from conftest import kill_when, resume_cli, toy
from test_reproducible import _count

from openended.engine.jobs import ChildResult
from openended.engine.nodes import count_nodes, tag_node, this_node

BUDGET = 120


def _status(python: str, env: dict, db) -> dict:
    out = subprocess.run([python, "-m", "openended", "status", str(db), "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_children_per_node_add_up_across_a_kill_and_a_resume_on_two_nodes(tmp_path, python, cli_env):
    from ray.cluster_utils import Cluster

    # A cluster of this test's own (the session's Ray stays up for the tests after it); its head has no CPU,
    # so every evaluation runs on one of the two worker nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        db = tmp_path / "nodes.db"
        # reproducible mode: results that arrive early wait in memory, so a kill leaves evaluated children
        # unstored; those must not be counted (they are evaluated again after the resume)
        proc = subprocess.Popen(
            [python, "-m", "openended", "run", "--task", toy("slow"), "--db", str(db), "--budget", str(BUDGET),
             "--sandbox", "inprocess", "--max-in-flight", "4", "--batch-size", "2", "--seed", "1",
             "--ray-address", cluster.address, "--quiet"],
            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        kill_when(proc, lambda: _count(db), 40)
        killed = _status(python, cli_env, db)
        stored = killed["children_done"] + killed["children_failed"]
        assert 0 < stored < BUDGET
        assert sum(killed["children_per_node"].values()) == stored
        resume_cli(python, cli_env, db, cluster.address)
        info = _status(python, cli_env, db)
        per_node = info["children_per_node"]
        assert info["children_done"] + info["children_failed"] == BUDGET
        assert sum(per_node.values()) == BUDGET, per_node
        # both nodes evaluated children, each named by its own node id (same machine, same IP and hostname)
        ids = {n.node_id[:8] for n in nodes}
        assert len(per_node) == 2 and {name.rsplit(" ", 1)[1] for name in per_node} == ids, (per_node, ids)
        assert list(per_node.values()) == sorted(per_node.values(), reverse=True)
        shown = subprocess.run([python, "-m", "openended", "status", str(db)], env=cli_env, capture_output=True,
                               text=True, timeout=60)
        assert "children per node" in shown.stdout and all(i in shown.stdout for i in ids), shown.stdout
    finally:
        cluster.shutdown()


def test_a_batch_names_one_node_and_unnamed_results_are_not_counted():
    # this process's node (None without Ray: run_jobs called in a test's own process), one string for the batch
    results = tag_node(lambda: [ChildResult(1), ChildResult(2)])()
    assert [r.node for r in results] == [this_node()] * 2 and results[0].node is results[1].node
    per_node = {"a": 1}
    count_nodes(per_node, [ChildResult(1, node="a"), ChildResult(2, node="b"), ChildResult(3)])
    assert per_node == {"a": 2, "b": 1}
