"""The sandbox image: build it (from the Dockerfile, or with no registry via debootstrap) and check it.

The image is a minimal Debian with python3 and the host's numpy (the PyPI wheel of the version installed
beside openended, so a Docker campaign rounds as a ``process`` or ``inprocess`` one does), labelled
``openended.sandbox.version`` and ``openended.sandbox.numpy``. Nothing of openended is baked in (the runner
travels with each evaluation), so only a change of this version asks users to rebuild.
"""

from __future__ import annotations

import json
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openended.sandbox.engine import (
    IMAGE_VERSION,
    NUMPY_LABEL,
    PYTHON,
    SHM_MB,
    VERSION_LABEL,
    client,
    container_options,
    host_numpy,
    neutral_folders,
)
from openended.sandbox.jobdir import RUNNER
from openended.sandbox.spec import Limits, SandboxSpec

SANDBOXES_DIR = RUNNER.parent
DEBIAN_SUITE = "bookworm"
DEBIAN_PYTHON = "3.11"  # bookworm's python3: the numpy wheel's tag
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Files a sandbox never needs: smaller image, faster import.
SLIM_PATHS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
              "var/lib/apt/lists")


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says which step failed and why."""


def build_image(image: str = "openended-sandbox:latest", *, method: str = "auto", mirror: str = DEBIAN_MIRROR,
                log: Callable[[str], object] = print) -> str:
    """Build ``image``; ``method`` is ``dockerfile`` (needs a registry), ``debootstrap`` (needs none,
    runs as root) or ``auto`` (the Dockerfile, then debootstrap if that fails). Returns the method used."""
    api = client(timeout=600)
    api.ping()
    numpy = host_numpy()
    if method in ("auto", "dockerfile"):
        try:
            log(f"building {image} from {SANDBOXES_DIR / 'Dockerfile'} (numpy {numpy}) ...")
            api.images.build(path=str(SANDBOXES_DIR), dockerfile="Dockerfile", tag=image, rm=True, pull=False,
                             buildargs={"NUMPY": numpy})
            return "dockerfile"
        except Exception as exc:  # no registry, most often
            if method == "dockerfile":
                raise ImageBuildError(f"docker build from {SANDBOXES_DIR / 'Dockerfile'} failed: {exc}") from None
            log(f"Dockerfile build failed ({str(exc).splitlines()[0][:160]}); building with debootstrap instead")
    _build_with_debootstrap(api, image, mirror, numpy, log)
    return "debootstrap"


# The image's glibc (bookworm's 2.36) runs a manylinux wheel of any of these tags.
MANYLINUX_GLIBC_MINORS = range(17, 37)
PIP_DOWNLOAD_TIMEOUT_S = 600


def download_numpy(version: str, downloads: Path) -> Path:
    """numpy ``version``'s wheel for the image's Python and this machine, from the package index pip uses (its
    configuration: ``PIP_INDEX_URL``, ``PIP_FIND_LINKS`` for a folder of wheels); ImageBuildError saying why not."""
    machine = platform.machine()
    tags = [f"--platform=manylinux_2_{n}_{machine}" for n in MANYLINUX_GLIBC_MINORS]
    tags.append(f"--platform=manylinux2014_{machine}")
    abi = "cp" + DEBIAN_PYTHON.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               f"--python-version={DEBIAN_PYTHON}", "--implementation=cp", f"--abi={abi}", *tags,
               "-d", str(downloads), f"numpy=={version}"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S)
        output, code = (proc.stderr or proc.stdout), proc.returncode
    except subprocess.TimeoutExpired:
        output, code = f"no answer within {PIP_DOWNLOAD_TIMEOUT_S} s", None
    wheels = sorted(downloads.glob(f"numpy-{version}-*.whl"))
    if code != 0 or not wheels:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ImageBuildError(
            f"could not download numpy {version} for the image's Python {DEBIAN_PYTHON} on {machine} (pip download "
            f"{'exit ' + str(code) if code is not None else 'timed out'}: {tail or 'no wheel'}). The image takes the "
            f"host's numpy, so that Docker campaigns round as the host's do: give pip an index (PIP_INDEX_URL) or a "
            f"folder of wheels (PIP_FIND_LINKS), or install a numpy that has a cp{abi[2:]} manylinux wheel here")
    return wheels[0]


def unpack_numpy(rootfs: Path, wheel_path: Path) -> None:
    """Unpack a numpy wheel into ``rootfs``'s /usr/local (on the image's ``sys.path``), readable by every user
    whatever this process's umask: folders 0755, files their wheel's mode or 0644, plus read for all."""
    target = rootfs / "usr" / "local" / "lib" / f"python{DEBIAN_PYTHON}" / "dist-packages"
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        for member in wheel.infolist():
            path = Path(wheel.extract(member, target))
            if not member.is_dir():  # folders below, with those extract() made on its way
                mode = stat.S_IMODE(member.external_attr >> 16) or 0o644  # the wheel keeps its libraries' x bits
                path.chmod(mode | 0o444)
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)  # made under this process's umask


def _build_with_debootstrap(api: Any, image: str, mirror: str, numpy: str, log: Callable[[str], object]) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (Debian: apt-get install -y debootstrap)")
    repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
    tmp = tempfile.mkdtemp(prefix="openended-rootfs-")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None  # kill: as Ctrl-C
    try:
        _debootstrap_and_import(api, Path(tmp), image, repository, tag, mirror, numpy, log)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        remove_rootfs(Path(tmp))


def remove_rootfs(folder: Path) -> None:
    """Remove a build folder (never raises), first unmounting what debootstrap mounted inside it (its /proc and /sys
    stay mounted when it is interrupted, and a plain removal then leaves some 200 MB behind)."""
    prefix = str(folder.resolve()) + "/"
    try:
        with open("/proc/self/mounts") as fh:
            points = [line.split()[1].encode().decode("unicode_escape") for line in fh]
    except OSError:  # no /proc: nothing debootstrap could have mounted either
        points = []
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def _debootstrap_and_import(api: Any, tmp: Path, image: str, repository: str, tag: str, mirror: str, numpy: str,
                            log: Callable[[str], object]) -> None:
    rootfs = tmp / "rootfs"
    wheel = download_numpy(numpy, tmp)  # first: a machine that cannot fetch it learns so before the minute below
    log(f"numpy {numpy}: {wheel.name}")
    log(f"debootstrap {DEBIAN_SUITE} with python3 into {rootfs} (about a minute) ...")
    started = time.monotonic()
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3", DEBIAN_SUITE, str(rootfs), mirror],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ImageBuildError(f"debootstrap failed (exit {proc.returncode}): " + " | ".join(tail))
    unpack_numpy(rootfs, wheel)
    for rel in SLIM_PATHS:
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    stripped = strip_setuid(rootfs)
    log(f"removed the setuid/setgid bit from {len(stripped)} files ({', '.join(stripped[:6])}...)")
    tarball = Path(tmp) / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    log(f"debootstrap took {time.monotonic() - started:.0f}s; "
        f"importing {tarball.stat().st_size / 1e6:.0f} MB as {image}")
    api.api.import_image_from_file(str(tarball), repository=repository, tag=tag,
                                   changes=[f'LABEL {VERSION_LABEL}="{IMAGE_VERSION}"',
                                            f'LABEL {NUMPY_LABEL}="{numpy}"',
                                            "ENV PATH=/usr/local/bin:/usr/bin:/bin"])


def strip_setuid(rootfs: Path) -> list[str]:
    """Clear the setuid and setgid bits of every file under ``rootfs``; their paths inside it.
    Nothing in a sandbox needs them, and each is a way to gain privileges a child should not have."""
    stripped = []
    for path in sorted(rootfs.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        mode = path.stat().st_mode
        if mode & (stat.S_ISUID | stat.S_ISGID):
            path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
            stripped.append("/" + path.relative_to(rootfs).as_posix())
    return stripped


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


# A probe of each limit, run as the sandbox user inside a container made like any evaluation's.
PROBE = r'''
import json, os, socket
# LC_CTYPE: set by python3 itself (PEP 538), not passed from the host
report = {"uid": os.getuid(), "env": sorted(k for k in os.environ if k not in ("PATH", "HOSTNAME", "HOME", "LC_CTYPE"))}
try:
    import numpy; report["numpy"] = numpy.__version__
except Exception as exc:
    report["numpy"] = f"none importable ({type(exc).__name__}: {exc})"[:200]
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); report["network"] = "reachable"
except OSError as exc:
    report["network"] = str(exc)
try:
    open("/etc/probe", "w"); report["rootfs"] = "writable"
except OSError as exc:
    report["rootfs"] = str(exc)
try:
    open("/work/probe", "w").write("x"); report["workdir"] = "writable"
except OSError as exc:
    report["workdir"] = str(exc)
pids = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            import time; time.sleep(5); os._exit(0)
        pids.append(pid)
    report["pids"] = "200 forks allowed"
except OSError as exc:
    report["pids"] = f"fork refused after {len(pids)}: {exc}"
for pid in pids:
    os.kill(pid, 9)
import ctypes, errno, stat
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)  # io_uring_setup(8 entries)
report["io_uring"] = f"allowed (fd {fd})" if fd >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
report["ptrace"] = "allowed" if libc.syscall(101, 16, os.getppid(), 0, 0) == 0 else \
    errno.errorcode.get(ctypes.get_errno(), "?")  # PTRACE_ATTACH to the runner's parent
seg = libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE | IPC_CREAT | 0600
report["sysv_ipc"] = open("/proc/sysvipc/shm").read().count("\n") - 1
libc.shmctl(seg, 0, None)
shm = os.statvfs("/dev/shm")
report["shm_mb"] = shm.f_blocks * shm.f_frsize / 2**20
setuid = []
for top in ("/usr", "/bin", "/sbin", "/lib", "/etc", "/opt", "/var"):
    for root, dirs, names in os.walk(top):
        for name in names:
            try:
                mode = os.lstat(os.path.join(root, name)).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                setuid.append(os.path.join(root, name))
report["setuid"] = setuid
mounts = [line.split()[3] for line in open("/proc/self/mountinfo") if line.split()[4] in ("/task", "/agents")]
report["mount_sources"] = mounts
print(json.dumps(report))
'''


MEMORY_BOMB = "b = bytearray(256 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"


def check_sandbox(image: str = "openended-sandbox:latest") -> list[Check]:
    """Engine, image and the limits as actually enforced (probe containers); one Check per line."""
    checks: list[Check] = []
    try:
        api = client(timeout=30)
        version = api.version()
        checks.append(Check("engine", True, f"Docker {version.get('Version')} ({api.info().get('Driver')}, "
                                            f"cgroup v{api.info().get('CgroupVersion', '?')})"))
    except Exception as exc:
        return [Check("engine", False,
                      f"no Docker engine answers: {type(exc).__name__}; start dockerd or set DOCKER_HOST")]
    try:
        img = api.images.get(image)
    except Exception:
        checks.append(Check("image", False, f"{image} is not present: run `openended sandbox build`"))
        return checks
    label = (img.labels or {}).get(VERSION_LABEL)
    rebuild = "" if label == IMAGE_VERSION else ": rebuild with `openended sandbox build`"
    checks.append(Check("image", label == IMAGE_VERSION,
                        f"{image} {img.short_id}, {img.attrs.get('Size', 0) / 1e6:.0f} MB, version {label} "
                        f"(expected {IMAGE_VERSION}{rebuild})"))
    spec = SandboxSpec(kind="docker", image=image, limits=Limits(memory_mb=64, pids=32), campaign_label="check")
    root, task, agents = neutral_folders()
    try:
        task.mkdir()
        opts = container_options(spec, task, agents)
        opts["log_config"] = {"type": "json-file"}
        report = _probe(api, opts, [PYTHON, "-c", PROBE])
        if isinstance(report, str):
            checks.append(Check("probe", False, report))
            return checks
        labelled, host = (img.labels or {}).get(NUMPY_LABEL), host_numpy()
        found = report["numpy"]  # as the sandbox user imports it: the files must be readable to it too
        checks.append(Check("numpy", found == host, f"{found} in the image (labelled {labelled}), {host} on the host"
                            + ("" if found == host else ": rebuild with `openended sandbox build`, or Docker "
                                                        "campaigns round differently from the host's")))
        checks.append(Check("non-root user", report["uid"] != 0, f"uid {report['uid']}"))
        checks.append(Check("no network", report["network"] != "reachable", report["network"]))
        checks.append(Check("read-only root", report["rootfs"] != "writable", report["rootfs"]))
        checks.append(Check("tmpfs work dir", report["workdir"] == "writable", report["workdir"]))
        checks.append(Check("pids limit", "refused" in report["pids"], report["pids"]))
        checks.append(Check("no host environment", not report["env"], ", ".join(report["env"]) or "none passed"))
        checks.append(Check("seccomp profile", report["io_uring"] != "allowed" and report["ptrace"] != "allowed",
                            f"io_uring_setup: {report['io_uring']}, ptrace: {report['ptrace']}"))
        checks.append(Check("private IPC namespace", report["sysv_ipc"] == 1,
                            f"{report['sysv_ipc']} SysV segment(s) visible after making one (the host's stay out)"))
        checks.append(Check("small /dev/shm", 0 < report["shm_mb"] <= SHM_MB,
                            f"{report['shm_mb']:.0f} MiB (limit {SHM_MB} MiB)"))
        checks.append(Check("no setuid files", not report["setuid"],
                            ", ".join(report["setuid"][:5]) or "none in the image"))
        # mountinfo shows a source relative to its filesystem: the tail of the neutral folder's path
        neutral = all(str(task).endswith(m) or str(agents).endswith(m) for m in report["mount_sources"])
        checks.append(Check("neutral mount sources", neutral and len(report["mount_sources"]) == 2,
                            ", ".join(report["mount_sources"]) or "no mount of /task or /agents"))
        bomb = api.containers.run(command=[PYTHON, "-c", MEMORY_BOMB], **opts)
        try:
            status = bomb.wait(timeout=60)
            bomb.reload()
            oom = bomb.attrs["State"].get("OOMKilled")
            checks.append(Check("memory limit", bool(oom) or status.get("StatusCode") == 137,
                                f"256 MB in a 64 MB container: exit {status.get('StatusCode')}, OOM-killed {oom}"))
        finally:
            bomb.remove(force=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return checks


def _probe(api: Any, opts: dict[str, Any], command: list[str]) -> dict[str, Any] | str:
    container = api.containers.run(command=command, **opts)
    try:
        status = container.wait(timeout=60)
        out = container.logs(stdout=True, stderr=False).decode().strip().splitlines()
        if status.get("StatusCode") != 0 or not out:
            err = container.logs(stdout=False, stderr=True).decode().strip()[-300:]
            return f"probe container failed (exit {status.get('StatusCode')}): {err}"
        return json.loads(out[-1])
    finally:
        container.remove(force=True)
