"""``openended cluster check`` (openended.cluster.check): every alive node's Docker engine, sandbox image and
version, probed through Ray; the image loaded from the driver's copy onto nodes that lack it."""

from __future__ import annotations

import io
import subprocess
import tarfile
import uuid

from conftest import SANDBOX_IMAGE

from openended.cluster.check import check_cluster, save_image
from openended.sandbox.engine import IMAGE_VERSION, VERSION_LABEL, node_identity


def test_every_alive_node_reports_its_engine_and_image(ray_address, docker_engine):
    [node] = check_cluster(SANDBOX_IMAGE)  # this session's Ray: one node
    assert node.ok and node.head and node.engine and node.image_version == IMAGE_VERSION, node
    assert node.identity == node_identity() and not node.loaded
    [missing] = check_cluster("openended-no-such-image:0")
    assert not missing.ok and "not present" in missing.problem and missing.engine == node.engine


def _tiny_image(tag: str) -> None:
    """A one-file image with the sandbox's version label (what a node lacking the image is given)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    subprocess.run(["docker", "import", "--change", f"LABEL {VERSION_LABEL}={IMAGE_VERSION}", "-", tag],
                   input=data.getvalue(), check=True, capture_output=True)


def test_a_node_lacking_the_image_gets_the_drivers_copy_through_ray(ray_address, docker_engine):
    tag = f"openended-test-tiny:{uuid.uuid4().hex[:8]}"
    _tiny_image(tag)
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
