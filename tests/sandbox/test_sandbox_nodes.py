"""The docker sandbox on a node that shares its engine with others (docker-outside-of-docker, as the nodes
of tests/cluster do): its folders under the node's work dir, its containers told apart by node identity."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import containers_left

from openended.sandbox import SandboxSpec, sweep
from openended.sandbox.engine import HOST_LABEL, PID_LABEL, client, container_options, neutral_folders, node_identity


def test_sandbox_folders_are_made_under_the_node_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENENDED_WORK_DIR", str(tmp_path))
    root, task, agents = neutral_folders()
    assert root.parent == tmp_path and agents.is_dir() and task.parent == root
    monkeypatch.delenv("OPENENDED_WORK_DIR")
    root2, _, _ = neutral_folders()
    try:
        assert root2.parent == Path(tempfile.gettempdir())
    finally:
        shutil.rmtree(root2)


def test_node_identity_names_the_pid_namespace():
    namespace = os.readlink("/proc/self/ns/pid")
    host, _, inode = node_identity().partition("/")
    assert inode and inode in namespace and host
    # a process in another PID namespace (as in a node's container) is another owner
    other = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "readlink", "/proc/self/ns/pid"],
                           capture_output=True, text=True)
    if other.returncode == 0:
        assert other.stdout.strip() != namespace


def test_a_worker_sweeps_only_its_own_node_containers(docker_engine):
    """Nodes sharing one engine: a container whose owner is another node's (dead-looking) pid is not this
    node's to sweep; the campaign's sweep (the driver's, at its start and end) removes it."""
    api = client()
    spec = SandboxSpec(kind="docker", campaign_label="test-sweep-nodes")
    with tempfile.TemporaryDirectory() as tmp:
        opts = container_options(spec, tmp, Path(tmp))
        opts.pop("detach")
        other = {**opts["labels"], HOST_LABEL: node_identity() + "0", PID_LABEL: "999999"}
        ours_dead = {**opts["labels"], PID_LABEL: "999999"}
        created = [api.containers.create(command=["/bin/true"], **{**opts, "labels": labels})
                   for labels in (other, ours_dead)]
        try:
            assert sweep("test-sweep-nodes", only_dead_owners=True) == 1  # ours, whose worker is gone
            assert containers_left("test-sweep-nodes") == [created[0].id[:12]]
            assert sweep("test-sweep-nodes") == 1
        finally:
            for c in created:
                subprocess.run(["docker", "rm", "-f", c.id], capture_output=True)
    assert containers_left("test-sweep-nodes") == []
