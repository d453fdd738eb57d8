"""Ending an agent of :mod:`sandboxes.agent`: its processes killed, its folder removed.

At close (and after a timeout, a death or a bad reply) ``Agent`` kills the agent's process group
and every process below the agent that can be found (:func:`kill_all`: the agent process is the
child subreaper of what it starts, so orphans stay below it), then removes its folder even where
the agent took permissions away (:func:`remove_tree`, which the runner's clean-up between jobs
uses too). Known limit: a process that left the
agent's session and whose parents are gone (the agent can undo its subreaper setting) is not
found; the sandbox container's runner kills every process between jobs.

Standard library only; finding descendants reads Linux's /proc (elsewhere only the group is killed).
"""

from __future__ import annotations

import os
import signal
import stat
import sys

__all__ = ["descendants", "kill_all", "remove_tree"]


def kill_all(pid: int) -> None:
    """SIGKILL the process group of ``pid`` (not yet reaped, so the group is still its own) and its descendants."""
    for _round in range(3):  # again: a process may have forked meanwhile
        victims = descendants(pid) if sys.platform.startswith("linux") else set()
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except OSError:
                pass
        if not victims:
            break


def _make_writable(path: str) -> None:
    """Give the owner rwx on ``path`` and on every folder under it, top down (so each can be listed),
    never through a symbolic link (that could reach a folder outside)."""
    try:
        os.chmod(path, stat.S_IRWXU)
    except OSError:
        pass
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            inner = os.path.join(root, name)
            if not os.path.islink(inner):
                try:
                    os.chmod(inner, stat.S_IRWXU)
                except OSError:
                    pass


def remove_tree(path: str) -> bool:
    """Remove ``path`` (a folder and everything under it, or a single file or link) even where a child
    took permissions away; whether it is gone. Never raises: a tree too deep to walk stays, and the
    caller sees it."""
    import shutil

    try:
        if os.path.isdir(path) and not os.path.islink(path):
            _make_writable(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except (OSError, RecursionError):
        pass
    return not os.path.lexists(path)


def descendants(root_pid: int) -> set[int]:
    """The processes below ``root_pid`` and the members of its session (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    session: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, ppid, sid = int(name), int(fields[1]), int(fields[3])
        children.setdefault(ppid, []).append(pid)
        if sid == root_pid:
            session.add(pid)
    found, todo = set(), [root_pid, *session]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    found |= session
    found.discard(root_pid)
    found.discard(os.getpid())
    return found
