"""A real multi-node Ray cluster on one machine, whose worker nodes share nothing with the driver but Ray.

The head is ``ray start --head`` on the host (no CPUs of its own: every evaluation goes to a worker
node). Each worker node is a Docker container of the node image (tests/cluster/node_image.py: Debian's
python3 3.11.2, its own Ray and openended installed from a wheel) on the host network, joining the head
on 127.0.0.1. A node sees none of the driver's files: not the checkout, the task folder, the database
nor the driver's temporary folders. What it has:

- the host's Docker engine (its socket mounted: docker-outside-of-docker), for the sandbox. Chosen over
  docker-in-docker because there is no registry to pull a ``docker:dind`` image from, an engine inside a
  node needs a privileged container and its own image store (the sandbox image loaded into each), and
  on a 2-core machine a second and third dockerd cost what the evaluations need;
- a private host folder mounted at the same path inside it, its ``OPENENDED_WORK_DIR``: the sandbox makes
  its job folders there, so that the host's engine, which resolves bind mounts on the host, finds them.

Ray's version check compares Python patch versions unless ``RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor``
(the host's python is 3.11.7, Debian's 3.11.2): the head, the nodes and a driver all get it.

Node containers carry the label ``openended.test-node=<cluster id>``; :meth:`Cluster.stop` removes them
and ends the head's processes (those it started, by process group and session folder).
Tests share the session's ``cluster`` fixture (tests/conftest.py); one that kills or leaves nodes takes
:func:`own_cluster`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from node_image import LABEL, build_node_image

ROOT = Path(__file__).resolve().parents[2]
# Python 3.11.2 nodes with a 3.11.7 head; no token authentication (a token in ~/.ray would turn it on for the
# head and the driver, not for the nodes): the cluster listens on 127.0.0.1 only.
RAY_ENV = {"RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL": "minor", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's floor is 75 MiB
NODE_MEMORY = "3g"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


@dataclass
class Node:
    """One worker node: its container, its private work folder (the same path on the host and in the
    node) and its identity as a sandbox container's ``openended.host`` label names it."""

    name: str
    work_dir: Path
    identity: str = ""
    docker: bool = True  # the host's Docker socket is mounted: the docker sandbox can run there


@dataclass
class Cluster:
    """A running head and its worker nodes; ``address`` is what a driver joins (``--ray-address``)."""

    id: str
    image: str
    root: Path  # the head's temporary folder and the nodes' work folders
    port: int
    head: subprocess.Popen | None = None
    nodes: list[Node] = field(default_factory=list)
    started: int = 0  # nodes started so far (names stay unique when nodes are removed)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver process (the CLI from this checkout) that joins this cluster."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_ENV, PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        return env

    # ------------------------------------------------------------------ head
    def start_head(self) -> None:
        temp = self.root / "head"
        temp.mkdir(parents=True)
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={self.port}",
               "--node-ip-address=127.0.0.1", "--num-cpus=0", "--include-dashboard=false", f"--temp-dir={temp}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        log = open(self.root / "head.log", "wb")
        # At the usual priority even in a niced test run: Ray gives a joining node's raylet 30 s to register
        # with the head's GCS, and a starved GCS on a busy 2-core machine misses that.
        self.head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.driver_env(),
                                     start_new_session=True, cwd=self.root, preexec_fn=_usual_priority)
        if not _wait_port(self.port, 60):
            raise RuntimeError(f"the Ray head did not start: {(self.root / 'head.log').read_text()[-2000:]}")

    # ----------------------------------------------------------------- nodes
    def add_node(self, cpus: int = 1, tries: int = 3, *, docker: bool = True) -> Node:
        """Start one more worker node; returns once it has joined (a node whose raylet missed Ray's 30 s
        to register, on a busy machine, is started again). ``docker=False``: without the host's Docker
        socket, a node on which the docker sandbox cannot run."""
        for attempt in range(tries):
            try:
                return self._add_node(cpus, docker)
            except RuntimeError:
                node = self.nodes.pop()
                subprocess.run(["docker", "rm", "-f", node.name], capture_output=True)
                shutil.rmtree(node.work_dir, ignore_errors=True)
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _add_node(self, cpus: int, docker: bool) -> Node:
        self.started += 1
        index = self.started
        node = Node(f"openended-test-{self.id}-node{index}", self.root / f"node{index}", docker=docker)
        node.work_dir.mkdir(parents=True)
        resources = json.dumps({f"test-node{index}": 1})
        socket_mount = ["-v", "/var/run/docker.sock:/var/run/docker.sock"] if docker else []
        cmd = ["docker", "run", "-d", "--name", node.name, "--label", f"{LABEL}={self.id}", "--network", "host",
               "--memory", NODE_MEMORY, "--shm-size", "256m", *socket_mount,
               "-v", f"{node.work_dir}:{node.work_dir}", "-e", f"OPENENDED_WORK_DIR={node.work_dir}",
               *[f"--env={k}={v}" for k, v in RAY_ENV.items()],
               self.image, "ray", "start", "--block", f"--address=127.0.0.1:{self.port}",
               "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", f"--resources={resources}",
               f"--object-store-memory={OBJECT_STORE_BYTES}", f"--dashboard-agent-listen-port={free_port()}",
               "--disable-usage-stats"]
        subprocess.run(cmd, check=True, capture_output=True)
        self.nodes.append(node)
        pid = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", node.name], capture_output=True,
                             text=True, check=True).stdout.strip()
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
        node.identity = f"{socket.gethostname()}/{namespace.removeprefix('pid:[').removesuffix(']')}"
        self.wait_for_nodes(len(self.nodes))
        return node

    def kill_node(self, node: Node, *, raylet: bool = False) -> None:
        """Kill a worker node without warning: ``docker kill`` its container (SIGKILL to everything in it), or,
        with ``raylet``, SIGKILL its raylet alone (its workers and ``ray start`` then go down on their own).
        It leaves :attr:`nodes`; its container stays until :meth:`stop`."""
        if raylet:
            top = subprocess.run(["docker", "top", node.name, "-eo", "pid,args"], capture_output=True, text=True,
                                 check=True).stdout.splitlines()[1:]
            pids = [int(line.split()[0]) for line in top if "/raylet" in line.split(None, 2)[1]]
            assert len(pids) == 1, top
            os.kill(pids[0], signal.SIGKILL)  # a host pid: `docker top` shows the host's view
        else:
            subprocess.run(["docker", "kill", node.name], check=True, capture_output=True)
        self.nodes.remove(node)

    def wait_for_nodes(self, n: int, seconds: float = 120) -> None:
        """Until the first ``n`` worker nodes say they have joined (``ray start`` prints so once its raylet runs)."""
        deadline = time.monotonic() + seconds
        waiting = self.nodes[:n]
        while waiting and time.monotonic() < deadline:
            for node in list(waiting):
                logs = subprocess.run(["docker", "logs", node.name], capture_output=True, text=True)
                if "Ray runtime started" in logs.stdout + logs.stderr:
                    waiting.remove(node)
                elif subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", node.name],
                                    capture_output=True, text=True).stdout.strip() != "true":
                    raise RuntimeError(f"node {node.name} stopped: {(logs.stdout + logs.stderr)[-3000:]}")
            time.sleep(0.5)
        if waiting:
            raise RuntimeError(f"nodes {[n.name for n in waiting]} did not join within {seconds:g}s")

    def node_files(self, node: Node) -> list[Path]:
        """What a node holds in its work folder (its cache of shipped tasks, its sandboxes' folders)."""
        return sorted(p.relative_to(node.work_dir) for p in node.work_dir.rglob("*"))

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Remove the node containers, end the head's processes, remove the folders."""
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={self.id}"], capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        if self.head is not None and self.head.poll() is None:
            try:
                os.killpg(self.head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
                self.head.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for pid in _pids_mentioning(str(self.root)):  # anything of the head's left (they name its folder)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _usual_priority() -> None:
    os.setpriority(os.PRIO_PROCESS, 0, 0)


def _pids_mentioning(text: str) -> list[int]:
    """The processes whose command line holds ``text`` (the head's session folder: only ours hold it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def docker_unavailable() -> str | None:
    """Why no cluster can be started here (None when it can)."""
    if shutil.which("docker") is None:
        return "no docker command"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers"
    if subprocess.run(["docker", "image", "inspect", "openended-sandbox:latest"], capture_output=True).returncode:
        return "no sandbox image (openended sandbox build)"
    return None


def start_cluster(n_nodes: int = 2) -> Cluster:
    """A head on the host and ``n_nodes`` worker nodes (building the node image first when needed)."""
    image = build_node_image()
    # a short root: a Ray session folder's socket paths must stay under the 107-byte limit
    cluster = Cluster(uuid.uuid4().hex[:8], image, Path(tempfile.mkdtemp(prefix="oe-cl-", dir="/tmp")), free_port())
    cluster.root.chmod(0o755)
    try:
        cluster.start_head()
        for _ in range(n_nodes):
            cluster.add_node()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def own_cluster(n_nodes: int = 2) -> Iterator[Cluster]:
    """A cluster of the test's own (one that kills or leaves nodes), stopped when the test ends. Skips by hand
    without Docker, fails under CI=true."""
    from conftest import _required

    _required("a multi-node cluster", docker_unavailable())
    started = time.monotonic()
    c = start_cluster(n_nodes)
    c.start_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.stop()
