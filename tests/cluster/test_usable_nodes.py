"""openended.cluster.usable on this test session's Ray (one node, this machine's Docker engine): a node is
usable when its probe finds the engine and the image; a campaign with no usable node stops before its first
task, naming the node and why."""

from __future__ import annotations

import pytest
from conftest import SANDBOX_IMAGE

from openended.cluster.usable import UsableNodes
from openended.config import ConfigError


def test_the_node_with_engine_and_image_is_usable_and_tasks_go_there(ray_address, docker_engine):
    import ray

    notes: list[tuple[str, str]] = []
    nodes = UsableNodes(SANDBOX_IMAGE, lambda node, why: notes.append((node, why)))
    nodes.start()
    here = ray.get_runtime_context().get_node_id()
    assert nodes.usable == {here} and nodes.alive == {here} and not notes
    where = ray.remote(num_cpus=0)(lambda: ray.get_runtime_context().get_node_id())
    assert ray.get(where.options(label_selector=nodes.selector()).remote(), timeout=60) == here
    assert not nodes.refresh(force=True)  # nothing joined or left


def test_no_usable_node_is_an_error_naming_each_node_and_why(ray_address, docker_engine):
    import ray

    notes: list[tuple[str, str]] = []
    nodes = UsableNodes("openended-no-such-image:0", lambda node, why: notes.append((node, why)))
    with pytest.raises(ConfigError, match="no alive node of the cluster with a CPU can run the docker sandbox") as err:
        nodes.start()
    here = ray.get_runtime_context().get_node_id()
    assert here[:8] in str(err.value) and "not present" in str(err.value)
    [(node, why)] = notes  # named once, with why
    assert here[:8] in node and "not present" in why
