"""Opening a campaign database: header and version checks, migrations, read-only mode, transactions.

The driver is the only writer; any number of readers (the progress display, plots, a second shell
running ``sqlite3``) may open the same file read-only at the same time: WAL mode lets them read a
consistent snapshot while the writer writes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import sqlite_utils

from .errors import ArchiveDBError, NewerSchemaError, NotADatabaseError
from .sql import SCHEMA_VERSION, migrations, split_sql

BUSY_TIMEOUT_MS = 30_000
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_header(path: Path) -> None:
    """NotADatabaseError unless ``path`` is empty (a new database) or starts with SQLite's header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except IsADirectoryError:
        raise NotADatabaseError(f"{path} is a directory, not an SQLite database") from None
    if len(head) == 0:
        return  # an empty file is a new database
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise NotADatabaseError(f"{path} is not an SQLite database (bad header); refusing to open it")


def schema_version_of(conn: sqlite3.Connection, path: Path) -> int:
    """The database's schema version; refuses a newer schema, a corrupt file or a foreign database."""
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.OperationalError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise NotADatabaseError(f"{path} is not a valid SQLite database ({exc})") from None
        raise
    except sqlite3.DatabaseError as exc:
        raise NotADatabaseError(f"{path} is not a valid SQLite database ({exc})") from None
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"{path} has schema version {version}, but this archive_db supports up to "
            f"version {SCHEMA_VERSION}; upgrade openended to open it"
        )
    if version == 0 and any(not n.startswith("sqlite_") for n in names):
        raise NotADatabaseError(
            f"{path} is an SQLite database but not an openended archive "
            f"(user_version 0 with tables {sorted(names)[:5]})"
        )
    return version


def _connect_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False)


def _precheck(path: Path) -> None:
    """Check version and validity through a read-only connection (it never checkpoints), so that
    a file we refuse is never written to."""
    try:
        conn = _connect_readonly(path)
    except sqlite3.Error:
        return  # fall back to the checks on the main connection
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        schema_version_of(conn, path)
    except sqlite3.OperationalError:
        pass  # e.g. a WAL file we may not open read-only: the main connection checks again
    finally:
        conn.close()


def check_file(path: str | os.PathLike[str]) -> None:
    """Refuse, without writing to it or creating anything beside it, a file a writer must not open:
    a directory, a file that is not SQLite, a foreign or a newer database (NotADatabaseError,
    NewerSchemaError, each naming the path). A missing or empty file passes: a writer creates a new
    database there."""
    path = Path(path)
    if path.exists():
        check_header(path)
        _precheck(path)


def holds_run(path: str | os.PathLike[str]) -> bool | None:
    """Whether the database at ``path`` holds a campaign (its run row), read without writing and
    without migrating: False for an empty file or a database without one; None when it cannot be
    read read-only (e.g. a WAL database in a folder we may not write to). Refuses what
    :func:`check_file` refuses."""
    path = Path(path)
    check_file(path)
    if path.stat().st_size == 0:
        return False
    try:
        conn = _connect_readonly(path)
    except sqlite3.Error:
        return None
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if schema_version_of(conn, path) == 0:
            return False  # an SQLite database with no tables yet
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "runs" not in tables:
            return False
        return conn.execute("SELECT 1 FROM runs WHERE id = 1").fetchone() is not None
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def _refuse_unmigrated(path: Path, version: int) -> None:
    """A reader's refusal of a database below this code's schema: plain words for a file that was never
    an openended database (empty, or SQLite with no tables), the way forward for an older one."""
    if version == 0:
        if path.stat().st_size == 0:
            raise NotADatabaseError(f"{path} is an empty file (0 bytes), not an openended database")
        raise NotADatabaseError(f"{path} is an SQLite database with no tables, not an openended database")
    raise ArchiveDBError(
        f"{path} has schema version {version}, older than {SCHEMA_VERSION}; "
        "open it once read-write (the writer migrates it) before reading it read-only"
    )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply every migration the database lacks, each in its own transaction."""
    for number, name, script in migrations():
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current >= number:
                conn.execute("COMMIT")
                continue
            if current != number - 1:
                raise ArchiveDBError(f"{path}: cannot apply {name} to schema version {current}")
            for statement in split_sql(script):
                conn.execute(statement)
            conn.execute("UPDATE runs SET schema_version = ?", (number,))
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def open_connection(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """Open (and for a writer create and migrate) the database at ``path``.

    A writer gets WAL mode and foreign keys; a reader gets ``mode=ro`` and ``query_only`` and is
    refused a database older than this code (the writer migrates it first).
    """
    exists = path.exists()
    if readonly and not exists:
        raise FileNotFoundError(f"{path}: no such archive database")
    if exists:
        check_header(path)
        _precheck(path)  # refuse before anything could write to the file
    if readonly:
        conn = _connect_readonly(path)
    else:
        conn = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        version = schema_version_of(conn, path)
        conn.execute("PRAGMA foreign_keys=ON")
        if readonly:
            if version < SCHEMA_VERSION:
                _refuse_unmigrated(path, version)
            conn.execute("PRAGMA query_only=ON")
        else:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ArchiveDBError(f"{path}: could not switch to WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA wal_autocheckpoint=4000")
            migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


class StoreConnection:
    """One open campaign database: its connection, read-only mode and transactions.

    ``conn`` is the ``sqlite3`` connection (autocommit: every transaction is explicit) and ``db``
    the ``sqlite_utils.Database`` around it. Not for concurrent use from several threads at once
    (one connection, one transaction).
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = bool(readonly)
        self.conn: sqlite3.Connection = open_connection(self.path, readonly=self.readonly)
        self.db = sqlite_utils.Database(self.conn, execute_plugins=False)

    @property
    def schema_version(self) -> int:
        version: int = self.conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            self.conn = None  # type: ignore[assignment]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r}{' readonly' if self.readonly else ''}>"

    def _writable(self) -> None:
        if self.readonly:
            raise ArchiveDBError(f"{self.path} is open read-only")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error). Inside an open transaction a
        block joins it through a savepoint (sqlite-utils' ``Database.atomic()``): an error inside
        undoes only the inner block.

        The outermost level is not ``atomic()`` itself because that begins with a deferred
        ``BEGIN``: the writer takes the write lock up front, so that the busy timeout applies and
        no read it makes first can go stale before its first write.
        """
        self._writable()
        conn = self.conn
        if conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.db.rollback()
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            self.db.rollback()
            raise
