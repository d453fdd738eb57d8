"""The guard of :mod:`sandboxes.agent`: has an agent changed the evaluator's files?

The runner gives each evaluation a fresh private working folder (its current directory, also its
``$TMPDIR``), where it later reads the result file. ``run_agent`` guards that folder (or another,
or none: see its ``guard`` argument). When the agent starts, :func:`snapshot` records every entry
of the guarded tree outside the folders of the agents alive in this process (path, type and
mode, inode, size, mtime_ns and ctime_ns); after every call, failed calls included, and at
close, after the agent's processes are dead, :func:`tampered` compares: a file or folder
changed, added or removed, or the agent's own folder replaced, is named, and the agent raises
``ForgedResult``. Hence the rule for task authors: while an agent is open, the evaluator itself
changes nothing in its working folder, and opens one agent at a time (changes between two
agents' own folders are not checked).

The agents' own folders (:func:`make_folder`) are made in the guarded folder, else in the
temporary folder, and no snapshot looks inside them while they are registered here.

Standard library only.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading

__all__ = ["difference", "forget_folder", "folder_id", "make_folder", "snapshot", "tampered"]

_LIVE_FOLDERS: set[str] = set()  # folders of the agents alive in this process: no guard looks inside
_LIVE_LOCK = threading.Lock()


def make_folder(parent: str | None) -> str:
    """A fresh private folder for an agent, in ``parent`` (else the temporary folder), outside every guard."""
    with _LIVE_LOCK:
        folder = os.path.realpath(tempfile.mkdtemp(prefix="agent-", dir=parent))
        _LIVE_FOLDERS.add(folder)
    return folder


def forget_folder(folder: str) -> None:
    """``folder`` is gone: guards look at its path again (a folder that cannot be removed is never forgotten)."""
    with _LIVE_LOCK:
        _LIVE_FOLDERS.discard(folder)


def folder_id(folder: str) -> tuple:
    """What identifies ``folder`` itself (inode, type), to tell that it was replaced."""
    st = os.lstat(folder)
    return st.st_ino, stat.S_IFMT(st.st_mode)


def _entry(st) -> tuple:
    return (stat.S_IFMT(st.st_mode), st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def snapshot(root: str) -> dict:
    """Every entry under ``root`` (not following links), outside the live agents' folders."""
    with _LIVE_LOCK:
        skip = set(_LIVE_FOLDERS)
    out: dict = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            out[folder] = ("unreadable", exc.errno)
            continue
        for e in entries:
            path = e.path
            if path in skip:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:
                out[path] = ("unreadable", exc.errno)
                continue
            out[path] = _entry(st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    return out


def difference(before: dict, after: dict) -> tuple[str, str] | None:
    """The first path (in sorted order) that differs between two snapshots, and how; None if none does."""
    if before == after:
        return None
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            return path, "added"
        if new is None:
            return path, "removed"
        if old[0] != new[0]:
            return path, "replaced"
        if "unreadable" in (old[0], new[0]):
            return path, "made unreadable"
        what = [name for name, i in (("mode", 1), ("inode", 2), ("size", 3), ("mtime", 4), ("ctime", 5))
                if old[i] != new[i]]
        return path, "changed (" + ", ".join(what) + ")"
    return None


def tampered(baseline: dict, root: str, folder: str, own_id: tuple) -> tuple[str, str] | None:
    """What the agent of ``folder`` (identified by ``own_id``) changed under ``root`` since ``baseline``:
    the path and the feedback, or None."""
    if folder:
        try:
            same = folder_id(folder) == own_id
        except OSError:
            same = False
        if not same:
            return folder, f"the agent replaced its own folder {folder}"
    found = difference(baseline, snapshot(root))
    if found:
        path, how = found
        return path, f"the agent changed the evaluator's files: {path} {how} (outside the agent's own folder)"
    return None
