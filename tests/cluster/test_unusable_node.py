"""A node of a real container cluster on which the docker sandbox cannot run (started without the host's
Docker socket) gets no evaluations: the campaign probes every node when it starts, keeps evaluations on
the nodes whose engine and image are usable, and says which node it left out and why."""

from __future__ import annotations

import time

from cluster_nodes import cluster  # noqa: F401  (the session fixture)
from test_cluster import containers_created, outcomes, run_campaign

from openended.sandbox import campaign_label


def test_a_node_without_a_docker_engine_gets_no_evaluations(cluster, tmp_path):  # noqa: F811
    good = list(cluster.nodes)
    bad = cluster.add_node(docker=False)
    try:
        db = tmp_path / "unusable.db"
        since = time.time()
        done = run_campaign(cluster, "maze-medium", db, tmp_path)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        statuses, reasons = outcomes(db)
        assert sum(statuses.values()) == 24 and not reasons, (statuses, reasons)  # no child failed
        notes = [line for line in out.splitlines() if "gets no evaluations" in line]
        assert len(notes) == 1 and bad.identity in notes[0] and "no Docker engine answers" in notes[0], notes
        # Nothing ran on it: a task that had would have left the shipped task folder in its work folder.
        assert cluster.node_files(bad) == [], cluster.node_files(bad)
        created = containers_created(campaign_label(db), since)
        assert set(created) == {n.identity for n in good}, created  # the usable nodes shared the work
    finally:
        cluster.kill_node(bad)  # the tests after this one see the cluster as it was
