"""Between two jobs of a serving container: return it to the state a fresh container starts in.

Standard library only (it runs inside the sandbox image, registered as ``sandboxes.cleanup`` by
the runner's bootstrap). The runner, as the container's PID 1 and after killing every other
process, removes the SysV IPC objects of the container's private IPC namespace and empties the
work root, /tmp, /dev/shm and /dev/mqueue, restoring write permission first (a child may have
made its folders read-only). Then it looks: anything that survived, or memory in use above the
container's idle level, is a reason to retire the container rather than hand it the next job.
"""

import ctypes
import os

from sandboxes.reaper import remove_tree

IPC_RMID = 0
SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")
# Memory a container may hold after clean-up above its idle level (page cache of what a job read).
MEMORY_SLACK_BYTES = 24 * 1024 * 1024
MEMORY_FILES = ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/memory.current")


def empty(folder):
    """Remove everything under ``folder`` (not the folder itself); never raises."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        remove_tree(os.path.join(folder, name))


def _ipc_ids(kind):
    """The ids of the SysV IPC objects of ``kind`` (shm, msg, sem) in this IPC namespace."""
    try:
        with open(f"/proc/sysvipc/{kind}") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return []
    return [int(row.split()[1]) for row in rows if len(row.split()) > 1]


def remove_ipc():
    """Remove every SysV shared-memory segment, message queue and semaphore set (all are ours)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    for ident in _ipc_ids("shm"):
        libc.shmctl(ident, IPC_RMID, None)
    for ident in _ipc_ids("msg"):
        libc.msgctl(ident, IPC_RMID, None)
    for ident in _ipc_ids("sem"):
        libc.semctl(ident, 0, IPC_RMID)


def memory_in_use():
    """Bytes the container's memory cgroup holds now (v1, then v2), or None where unreadable."""
    for path in MEMORY_FILES:
        try:
            with open(path) as fh:
                return int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


class Idle:
    """The container's idle memory level: the least memory in use seen after a clean-up."""

    def __init__(self):
        self.level = None

    def above(self, in_use):
        """How far ``in_use`` is above the idle level plus the slack (0 when within), updating the level."""
        if in_use is None:
            return 0
        if self.level is None or in_use < self.level:
            self.level = in_use
        return max(0, in_use - self.level - MEMORY_SLACK_BYTES)


def survivors(work_root):
    """What is left after the clean-up: a sentence, or None when nothing is."""
    left = []
    for folder in (work_root, *SCRATCH):
        try:
            names = os.listdir(folder) if folder else []
        except OSError:
            continue
        if names:
            left.append(f"{len(names)} entries in {folder} (e.g. {sorted(names)[0][:40]!r})")
    for kind in ("shm", "msg", "sem"):
        ids = _ipc_ids(kind)
        if ids:
            left.append(f"{len(ids)} SysV {kind} object(s)")
    others = [name for name in _pids() if name != os.getpid()]
    if others:
        left.append(f"{len(others)} process(es)")
    return "; ".join(left) or None


def _pids():
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def clean_up(work_root, idle):
    """Empty the container after a job (processes already killed); the reason to retire it, or None."""
    remove_ipc()
    for folder in (work_root, *SCRATCH):
        if folder:
            empty(folder)
    left = survivors(work_root)
    if left:
        return f"left after clean-up: {left}"
    over = idle.above(memory_in_use())
    if over:
        return (f"memory in use after clean-up is {over / 2**20:.0f} MiB above the container's idle level "
                f"({idle.level / 2**20:.0f} MiB)")
    return None
