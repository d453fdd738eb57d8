"""The Docker engine as both the ``docker`` sandbox and the image tools use it.

The client, why the engine cannot run the sandbox here (:func:`docker_problem`), the options of
every sandbox container (:func:`container_options`), the image's version label, and
:func:`sweep`, which removes a campaign's leftover containers. Containers carry the labels
``openended.campaign`` (the campaign), ``openended.host`` and ``openended.pid`` (the worker
that owns them; the host is :func:`node_identity`, which tells apart nodes that share one engine).

A node's sandbox folders are made under :func:`work_dir` (``$OPENENDED_WORK_DIR``, else the system's
temporary folder). A node that runs in a container and talks to its host's engine
(docker-outside-of-docker, as in tests/cluster) sets it to a folder mounted at the same path in the
node as on the host: the engine resolves a container's bind mounts on the host, not in the node.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openended.sandbox.seccomp import profile_json
from openended.sandbox.spec import SandboxSpec

if TYPE_CHECKING:
    import docker

LABEL = "openended.campaign"
HOST_LABEL = "openended.host"
PID_LABEL = "openended.pid"
# Only a change of this version asks users to rebuild the image (nothing of openended is baked in).
IMAGE_VERSION = "3"  # 2: no setuid or setgid file; 3: the host's numpy (PyPI's wheel), not Debian's 1.24
VERSION_LABEL = "openended.sandbox.version"
NUMPY_LABEL = "openended.sandbox.numpy"  # the numpy version in the image
PYTHON = "/usr/bin/python3"
# container_options keys that belong to the engine's HostConfig (the rest go to create_container)
HOST_CONFIG_KEYS = ("network_mode", "read_only", "mem_limit", "memswap_limit", "nano_cpus", "pids_limit", "cap_drop",
                    "security_opt", "tmpfs", "log_config", "ipc_mode", "shm_size", "ulimits")
# /dev/shm of a container (it counts against the memory limit): POSIX semaphores and small buffers fit.
SHM_MB = 16
# Open files per process (the engine's default is about a million: kernel memory a child could pin).
NOFILE = 4096
# This node's folder for the sandbox's job folders (and the node's cache of the driver's files).
WORK_DIR_ENV = "OPENENDED_WORK_DIR"


def work_dir() -> str:
    """The folder under which this node's sandboxes make their folders: ``$OPENENDED_WORK_DIR``, else the
    system's temporary folder."""
    return os.environ.get(WORK_DIR_ENV) or tempfile.gettempdir()


def node_identity() -> str:
    """Who owns a container: the host name and the PID namespace. Nodes in containers of one host share its
    engine and (on the host network) its name; their worker pids mean nothing in each other's namespace."""
    host = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return host
    return f"{host}/{namespace.removeprefix('pid:[').removesuffix(']')}"


def client(timeout: int = 120) -> docker.DockerClient:
    """A docker SDK client for this node's engine (DOCKER_HOST or the default socket)."""
    import docker

    return docker.from_env(timeout=timeout)


def docker_problem(image: str) -> str | None:
    """Why the docker sandbox cannot run here (None when it can)."""
    try:
        api = client(timeout=5)
        api.ping()
    except ImportError:
        return "the docker Python package is not installed"
    except Exception as exc:  # any failure to reach the engine means the same to the user
        return f"no Docker engine answers ({type(exc).__name__}); start dockerd or set DOCKER_HOST"
    try:
        img = api.images.get(image)
    except Exception:
        return f"image {image!r} is not present; build it with `openended sandbox build`"
    found = (img.labels or {}).get(VERSION_LABEL)
    if found != IMAGE_VERSION:
        return (f"image {image!r} is version {found}, this openended needs {IMAGE_VERSION}; "
                "rebuild it with `openended sandbox build`")
    return None


def host_numpy() -> str:
    """The numpy version installed beside openended: the one the image gets."""
    import numpy

    return str(numpy.__version__)


def image_numpy(image: str) -> str | None:
    """The numpy version ``image`` carries (its label), or None where no engine answers or it is absent."""
    try:
        return (client(timeout=5).images.get(image).labels or {}).get(NUMPY_LABEL)
    except Exception:  # no docker package, no engine, no such image: docker_problem says which
        return None


def container_options(spec: SandboxSpec, task_root: str | Path, agents_dir: Path) -> dict[str, Any]:
    """The keyword arguments of ``containers.run`` that make a sandbox container: no network, memory
    (no swap), CPU and pids limits, a read-only root with tmpfs at /work and /tmp, a non-root user, no
    capabilities, no new privileges, openended's seccomp profile, a private IPC namespace with a small
    /dev/shm, no host environment, and two read-only mounts: the task (/task) and the agents (/agents).
    Give both as folders whose paths say nothing of the host (see :func:`neutral_folders`): a
    container can read its mounts' sources in /proc/self/mountinfo."""
    limits = spec.limits
    memory = f"{limits.memory_mb}m"
    return dict(
        image=spec.image,
        detach=True,
        network_mode="none",
        read_only=True,
        user="65534:65534",
        environment={},
        mem_limit=memory,
        memswap_limit=memory,
        nano_cpus=int(limits.cpus * 1e9),
        pids_limit=limits.pids,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges", f"seccomp={profile_json()}"],
        ipc_mode="private",
        shm_size=f"{SHM_MB}m",
        ulimits=[{"name": "nofile", "soft": NOFILE, "hard": NOFILE}],
        tmpfs={"/work": f"rw,nosuid,nodev,size={max(16, limits.memory_mb // 2)}m,mode=1777",
               "/tmp": "rw,nosuid,nodev,size=16m,mode=1777"},
        volumes={str(task_root): {"bind": "/task", "mode": "ro"}, str(agents_dir): {"bind": "/agents", "mode": "ro"}},
        labels={LABEL: spec.campaign_label, HOST_LABEL: node_identity(), PID_LABEL: str(os.getpid())},
        log_config={"type": "none"},
        stop_signal="SIGKILL",
    )


def neutral_folders() -> tuple[Path, Path, Path]:
    """(root, task, agents): a fresh private folder under this node's :func:`work_dir`, whose
    ``task`` and ``agents`` are what a container mounts; remove ``root`` when done."""
    root = Path(tempfile.mkdtemp(prefix="openended-", dir=work_dir()))
    root.chmod(0o755)
    agents = root / "agents"
    agents.mkdir(mode=0o755)
    return root, root / "task", agents


def copy_task(task_root: str | Path, target: Path, hidden: Sequence[str] = ()) -> None:
    """Copy a task folder to ``target``, readable by the sandbox user whatever the user's umask, without
    its ``hidden`` folders (paths relative to the task folder)."""
    root = Path(task_root).resolve()
    left_out = {root / h for h in hidden}
    skip = shutil.ignore_patterns("__pycache__", ".*")

    def ignore(folder: str, names: list[str]) -> set[str]:
        return set(skip(folder, names)) | {n for n in names if Path(folder).resolve() / n in left_out}

    shutil.copytree(root, target, ignore=ignore)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def sweep(label: str, *, only_dead_owners: bool = False) -> int:
    """Remove this engine's containers of a campaign; with ``only_dead_owners``, only those whose
    owning worker process (on this host) is gone. Returns how many were removed."""
    api = client().api
    removed = 0
    host = node_identity()
    # The plain listing, not containers.list(): that inspects each container, and one removed
    # meanwhile (a worker retiring it) would fail the whole sweep with NotFound.
    for container in api.containers(all=True, filters={"label": f"{LABEL}={label}"}):
        labels = container.get("Labels") or {}
        if only_dead_owners and (labels.get(HOST_LABEL) != host or _alive(int(labels.get(PID_LABEL, "0") or 0))):
            continue
        try:
            api.remove_container(container["Id"], force=True)
            removed += 1
        except Exception:  # already gone
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
