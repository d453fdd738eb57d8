"""openended.cluster.usable on this test session's Ray (one node, this machine's Docker engine): a node is
usable when its probe finds the engine and the image; a campaign with no usable node stops before its first
task, naming the node and why."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from conftest import SANDBOX_IMAGE, labelled_image

from openended.cluster.usable import UsableNodes
from openended.config import ConfigError
from openended.engine.dispatch import RayExecutor
from openended.sandbox.engine import NUMPY_LABEL
from openended.sandbox.spec import Limits, SandboxSpec
from openended.tasks import BUILTIN_DIR, TaskRef


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


def test_a_node_whose_image_carries_another_numpy_than_the_campaigns_takes_no_evaluation(ray_address,
                                                                                        docker_engine):
    """The campaign's numpy is its driver's image's; a node whose image was built under another numpy would
    make a child's result depend on where it ran. Without the driver's, the first usable node's is taken."""
    import ray

    tag = f"openended-test-tiny:{uuid.uuid4().hex[:8]}"
    here = ray.get_runtime_context().get_node_id()
    try:
        labelled_image(tag, **{NUMPY_LABEL: "1.0.0"})
        notes: list[tuple[str, str]] = []
        other = UsableNodes(tag, lambda node, why: notes.append((node, why)), numpy="2.0.0")
        with pytest.raises(ConfigError, match="no alive node") as err:
            other.start()
        assert "numpy 1.0.0" in str(err.value) and "numpy 2.0.0" in str(err.value), err.value
        [(node, why)] = notes
        assert here[:8] in node and "would depend on the node" in why
        same = UsableNodes(tag, numpy="1.0.0")
        same.start()
        assert same.usable == {here}
        unknown = UsableNodes(tag)  # the driver has no image: the first usable node's numpy is the campaign's
        unknown.start()
        assert unknown.usable == {here} and unknown.numpy == "1.0.0"
        # A campaign's executor reads the driver's image (this engine's) for the numpy every node must carry.
        spec = SandboxSpec(kind="docker", image=tag, limits=Limits(), campaign_label="numpy-test")
        executor = RayExecutor(TaskRef(str(BUILTIN_DIR / "maze")), spec)
        assert executor.nodes is not None and executor.nodes.numpy == "1.0.0"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
