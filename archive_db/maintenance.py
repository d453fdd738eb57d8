"""Reclaiming a campaign database's free space: :func:`vacuum`.

SQLite never gives pages back to the file system by itself: rows deleted (or compacted) leave free
pages that later inserts reuse, and the file keeps its size. ``VACUUM`` rebuilds the database into
a fresh file and copies it back; a database created with ``auto_vacuum = INCREMENTAL`` instead gets
``PRAGMA incremental_vacuum`` (moves its free pages to the end and truncates them, without a rebuild).

Readers stay safe: the campaign database is in WAL mode, so the rebuilt pages go to the WAL as one
transaction and a reader keeps the snapshot it started with until it ends its read; the file shrinks
when the WAL is checkpointed back into it, which waits (up to ``wait_s``) for such readers to finish.
A reader that holds its snapshot longer leaves the checkpoint to a later one (the next ``vacuum``, the
driver's next session, or the last connection's close): :attr:`VacuumReport.checkpointed` says so.

The store does not know about drivers: ``openended vacuum`` holds the campaign's run lock around
this call, so a vacuum never runs under a driver, nor a driver under a vacuum.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from .connection import BUSY_TIMEOUT_MS, check_file, schema_version_of
from .errors import ArchiveDBError, NotADatabaseError, is_damage

#: How long the closing checkpoint waits for readers that still hold an older snapshot.
CHECKPOINT_WAIT_S = 10.0


@dataclass(frozen=True)
class VacuumReport:
    """What :func:`vacuum` did. Sizes are bytes on disk: the database file plus its ``-wal``."""

    path: str
    mode: str  # "vacuum" or "incremental_vacuum"
    bytes_before: int
    bytes_after: int
    free_pages_before: int  # pages no table or index used: what there was to reclaim
    page_size: int
    database_bytes: int  # page count x page size after: the size the file has once checkpointed
    checkpointed: bool  # False: a reader's snapshot kept the old pages; the file shrinks at a later checkpoint

    @property
    def reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "reclaimed": self.reclaimed}


def on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes of the database file and its WAL (if any)."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{os.fspath(path)}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    value: int = conn.execute(f"PRAGMA {name}").fetchone()[0]
    return value


def _failed(path: Path, exc: sqlite3.Error, what: str) -> ArchiveDBError:
    text = str(exc)
    if is_damage(exc):
        return NotADatabaseError(f"{path} is corrupt ({text}); {what} changed nothing. Keep a copy, and "
                                 f"try `sqlite3 {path} .recover`")
    if "locked" in text or "busy" in text:
        return ArchiveDBError(f"{path} is busy: another connection kept its write lock for "
                              f"{BUSY_TIMEOUT_MS // 1000} s ({text}); {what} changed nothing")
    if "full" in text:
        return ArchiveDBError(f"{what} of {path} needs free space about the database's size, in the temporary "
                              f"folder and again beside the database ({text}); it changed nothing")
    return ArchiveDBError(f"{what} of {path} failed: {text}")


def vacuum(path: str | os.PathLike[str], *, wait_s: float = CHECKPOINT_WAIT_S) -> VacuumReport:
    """Reclaim the free pages of the campaign database at ``path`` and report the bytes before and after.

    Refuses (FileNotFoundError, NotADatabaseError, NewerSchemaError, each naming the path) a missing
    file, an empty one, one that is not SQLite, a foreign or newer database, and a corrupt one (found
    by the rebuild, which then changes nothing). Never migrates. Does not check for a driver: see
    ``openended vacuum``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such database: {path}")
    check_file(path)
    if path.stat().st_size == 0:
        raise NotADatabaseError(f"{path} is an empty file (0 bytes), not an openended database")
    conn = sqlite3.connect(os.fspath(path), isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if schema_version_of(conn, path) == 0:
            raise NotADatabaseError(f"{path} is an SQLite database with no tables, not an openended database")
        wal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        incremental = _pragma(conn, "auto_vacuum") == 2
        mode = "incremental_vacuum" if incremental else "vacuum"
        free_before = _pragma(conn, "freelist_count")
        page_size = _pragma(conn, "page_size")
        bytes_before = on_disk(path)
        try:
            if incremental:
                # one page per step, and its rows have no columns, so execute() would step once
                conn.executescript("PRAGMA incremental_vacuum;")
            else:
                conn.execute("VACUUM")
        except sqlite3.Error as exc:
            raise _failed(path, exc, mode) from None
        checkpointed = True
        if wal:
            conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            checkpointed = busy == 0
        database_bytes = _pragma(conn, "page_count") * page_size
        bytes_after = on_disk(path)
    except sqlite3.DatabaseError as exc:
        raise _failed(path, exc, "vacuum") from None
    finally:
        conn.close()
    return VacuumReport(path=str(path), mode=mode, bytes_before=bytes_before, bytes_after=bytes_after,
                        free_pages_before=free_before, page_size=page_size, database_bytes=database_bytes,
                        checkpointed=checkpointed)
