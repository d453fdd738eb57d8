"""The image of a test cluster's worker node, built from the sandbox image and cached by content hash.

A node is a Debian bookworm rootfs (the sandbox image, ``openended-sandbox:latest``: python3 3.11.2 and
numpy) with its own Python environment: pip (a wheel the host downloads), then openended from a wheel
built from a copy of the checkout's packages, and the host's Ray version, installed by pip from the
package registry inside a container on the host network, then committed as an image. Nothing of the
checkout is mounted into a node: it gets the wheel, and only through the build.

The tag is ``openended-node:<hash>``, the hash of everything the image is made from (the packaged source
files, the host's Ray and pip versions, the base image's id and this file), so a rerun with nothing
changed finds it at once; a changed source file builds a new one (about 2 minutes with pip's cache,
which is kept in ``~/.cache/openended-test-node-pip``). Old tags are removed when a new one is built.

    python tests/cluster/node_image.py          # build (or find) it; prints the tag
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "openended-sandbox:latest"
REPOSITORY = "openended-node"
# On the image, on its build container and on every node container: what the tests own and clean up.
LABEL = "openended.test-node"
# What the wheel is made of (pyproject's [tool.setuptools.packages.find] and its readme).
PACKAGES = ("openended", "archive_db", "sandboxes")
TOP_FILES = ("pyproject.toml", "README.md")
PIP_CACHE = Path.home() / ".cache" / "openended-test-node-pip"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class NodeImageError(RuntimeError):
    """The node image could not be built; the message says which step failed."""


def source_files(root: Path = ROOT) -> list[Path]:
    """The files the wheel is built from, relative to ``root``, sorted."""
    files = [Path(name) for name in TOP_FILES]
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and not any(p.startswith(".") for p in rel.parts):
                files.append(rel)
    return sorted(files)


def _base_id() -> str:
    base = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE],
                          capture_output=True, text=True)
    if base.returncode != 0:
        raise NodeImageError(f"the base image {BASE_IMAGE} is not present (build it with `openended sandbox build`)")
    return base.stdout.strip()


def requirements(root: Path = ROOT) -> list[str]:
    """What a node installs before openended: its dependencies (pyproject.toml), Ray at the host's version."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if not d.startswith("ray")] + [f"ray[default]=={version('ray')}"]


def deps_hash(root: Path = ROOT) -> str:
    """The hash of what the dependencies layer is made from."""
    text = json.dumps({"requirements": requirements(root), "pip": version("pip"), "base": _base_id(),
                       "script": Path(__file__).read_text()})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_hash(root: Path = ROOT) -> str:
    """The hash of everything the node image is made from: its dependencies layer and the packaged sources."""
    digest = hashlib.sha256(deps_hash(root).encode())
    for rel in source_files(root):
        digest.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def _run(cmd: list[str], what: str, log: Callable[[str], object], **kwargs) -> str:
    log(f"node image: {what}")
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise NodeImageError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def _layer(base: str, tag: str, mounts: list[str], pip_args: list[str], what: str,
           log: Callable[[str], object]) -> None:
    """``tag``: ``base`` after a ``pip install`` in a container on the host network (the registry, its CA)."""
    container = f"openended-node-build-{tag.replace(':', '-').replace('/', '-')}"
    subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    try:
        _run(["docker", "run", "--name", container, "--label", f"{LABEL}=build", "--network", "host", "--user", "0",
              "--cpu-shares", "128", *mounts, "-v", f"{PIP_CACHE}:/pipcache", "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
              "-e", f"PIP_CERT={CA_BUNDLE}", "-e", "PIP_DISABLE_PIP_VERSION_CHECK=1", base, *pip_args], what, log)
        _run(["docker", "commit", "--change", "USER 0", "--change", f"LABEL {LABEL}={tag}",
              "--change", "ENV RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor",
              "--change", "ENV RAY_USAGE_STATS_ENABLED=0",
              "--change", 'CMD ["/bin/sh"]', container, tag], f"committing {tag}", log)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def build_node_image(root: Path = ROOT, *, log: Callable[[str], object] = print) -> str:
    """The tag of the node image for this checkout, built first when no image has its hash."""
    tag = f"{REPOSITORY}:{content_hash(root)}"
    if image_exists(tag):
        return tag
    tmp = Path(tempfile.mkdtemp(prefix="openended-node-build-"))
    try:
        deps = f"{REPOSITORY}-deps:{deps_hash(root)}"
        if not image_exists(deps):  # Debian's python3 (3.11.2), pip run from its wheel, the dependencies
            wheels = tmp / "pip"
            _run(["nice", "-n", "19", sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                  f"pip=={version('pip')}"], "fetching pip", log)
            wheels.chmod(0o755)
            pip = f"/pip/{next(wheels.glob('pip-*.whl')).name}"
            _layer(BASE_IMAGE, deps, ["-v", f"{wheels}:/pip:ro"],
                   ["/usr/bin/python3", f"{pip}/pip", "install", "-q", "--break-system-packages",
                    "--root-user-action=ignore", "--cache-dir", "/pipcache", pip, *requirements(root)],
                   "installing pip, openended's dependencies and Ray (pip, from the package registry)", log)
            _remove_old_tags(f"{REPOSITORY}-deps", keep=deps)
        src, dist = tmp / "src", tmp / "dist"
        for rel in source_files(root):  # a copy: the build writes nothing into the checkout
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, src / rel)
        _run(["nice", "-n", "19", sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
             "building the openended wheel", log)
        dist.chmod(0o755)
        wheel = next(dist.glob("openended-*.whl")).name
        _layer(deps, tag, ["-v", f"{dist}:/dist:ro"],
               ["/usr/bin/python3", "-m", "pip", "install", "-q", "--break-system-packages", "--no-deps",
                "--root-user-action=ignore", f"/dist/{wheel}"], "installing openended from its wheel", log)
        _remove_old_tags(REPOSITORY, keep=tag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tag


def _remove_old_tags(repository: str, keep: str) -> None:
    listed = subprocess.run(["docker", "images", repository, "--format", "{{.Repository}}:{{.Tag}}"],
                            capture_output=True, text=True).stdout.split()
    for old in listed:
        if old != keep:
            subprocess.run(["docker", "rmi", old], capture_output=True)


if __name__ == "__main__":
    print(build_node_image())
