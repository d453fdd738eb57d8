"""Read a genome from a folder on the host: a user's initial agent, a task's seed.

One rule for every such folder: regular files only (a symbolic link or a device could hand a host
file to the store and the sandbox), every name a genome path
(:func:`openended.names.genome_path_problem`), caches and hidden files left out.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from openended.names import Files, genome_path_problem


class GenomeFolderError(ValueError):
    """The folder cannot be a genome; the message names the folder and the path."""


def read_genome_folder(folder: str | os.PathLike[str]) -> Files:
    """The folder's files (relative path -> bytes), in path order; GenomeFolderError naming what is wrong."""
    root = Path(folder)
    files: Files = {}
    for here, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in [*dirs, *sorted(n for n in names if not n.startswith("."))]:
            path = Path(here) / name
            where = path.relative_to(root).as_posix()
            problem = genome_path_problem(where)
            if problem is not None:
                raise GenomeFolderError(f"in folder {str(folder)!r}, {problem}")
            if path.is_symlink():
                raise GenomeFolderError(f"{str(folder)!r} holds a symbolic link, {where!r}; an agent is made of "
                                        "regular files only")
            if name in dirs:
                continue
            if not stat.S_ISREG(path.lstat().st_mode):
                raise GenomeFolderError(f"{str(folder)!r} holds {where!r}, which is not a regular file")
            files[where] = path.read_bytes()
    if not files:
        raise GenomeFolderError(f"folder {str(folder)!r} holds no files")
    return files
