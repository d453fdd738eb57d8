"""``openended cluster check`` (openended.cluster.check): every alive node's Docker engine, sandbox image and
version and numpy, probed through Ray; the image loaded from the driver's copy onto nodes that lack it or
carry another numpy in it."""

from __future__ import annotations

import subprocess
import uuid

from conftest import SANDBOX_IMAGE, labelled_image

from openended.cluster.check import check_cluster, save_image
from openended.sandbox.engine import IMAGE_VERSION, NUMPY_LABEL, node_identity


def test_every_alive_node_reports_its_engine_and_image(ray_address, docker_engine):
    [node] = check_cluster(SANDBOX_IMAGE)  # this session's Ray: one node
    assert node.ok and node.head and node.engine and node.image_version == IMAGE_VERSION, node
    assert node.identity == node_identity() and not node.loaded
    [missing] = check_cluster("openended-no-such-image:0")
    assert not missing.ok and "not present" in missing.problem and missing.engine == node.engine


def test_a_node_lacking_the_image_gets_the_drivers_copy_through_ray(ray_address, docker_engine):
    tag = f"openended-test-tiny:{uuid.uuid4().hex[:8]}"
    labelled_image(tag)
    try:
        archive = save_image(tag)  # the driver's copy
        subprocess.run(["docker", "rmi", tag], check=True, capture_output=True)  # now the node lacks it
        [before] = check_cluster(tag)
        assert not before.ok and before.image_version is None
        [after] = check_cluster(tag, load=True, image_data=lambda: archive)
        assert after.ok and after.loaded and after.image_version == IMAGE_VERSION, after
        [again] = check_cluster(tag, load=True, image_data=lambda: b"never asked for")
        assert again.ok and not again.loaded
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_node_whose_image_carries_another_numpy_is_reported_then_given_the_drivers_copy(ray_address,
                                                                                          docker_engine):
    tag = f"openended-test-tiny:{uuid.uuid4().hex[:8]}"
    ids: list[str] = []
    try:
        ids.append(labelled_image(tag, **{NUMPY_LABEL: "2.0.0"}))
        archive = save_image(tag)  # the driver's copy, numpy 2.0.0
        ids.append(labelled_image(tag, **{NUMPY_LABEL: "1.0.0"}))  # the node's own build, under another numpy
        [node] = check_cluster(tag, numpy="2.0.0")
        assert not node.ok and node.image_numpy == "1.0.0", node
        assert "numpy 1.0.0" in node.problem and "numpy 2.0.0" in node.problem, node.problem
        [loaded] = check_cluster(tag, load=True, image_data=lambda: archive, numpy="2.0.0")
        assert loaded.ok and loaded.loaded and loaded.image_numpy == "2.0.0", loaded
        [plain] = check_cluster(tag)  # no numpy asked for: whatever the image carries
        assert plain.ok and plain.image_numpy == "2.0.0"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag, *ids], capture_output=True)
