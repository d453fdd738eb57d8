"""ArchiveDB: the SQLite lineage tree of one campaign (one file = one campaign).

The store is the checkpoint. The campaign driver is its only writer; any number of readers (the
progress display, plots, a second shell running ``sqlite3``) may open the same file read-only at
the same time: WAL mode lets them read a consistent snapshot while the writer writes.

Every write method is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) unless it runs inside
:meth:`ArchiveDB.transaction`, in which case it joins the outer transaction (through a savepoint,
so a refused call still writes nothing). Batch methods (:meth:`ArchiveDB.propose`,
:meth:`ArchiveDB.record`) validate the whole batch before writing anything.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import hashlib
import io
import json
import math
import os
import re
import sqlite3
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import sqlite_utils

from .errors import (
    ArchiveDBError,
    InvalidTransitionError,
    InvalidValueError,
    NewerSchemaError,
    NotADatabaseError,
    RunExistsError,
    UnknownAgentError,
)

# --------------------------------------------------------------------------------------------
# constants

STATUSES: tuple[str, ...] = ("proposed", "mutated", "evaluated", "archived", "rejected", "failed")
TERMINAL_STATUSES = frozenset({"archived", "rejected", "failed"})
FAIL_STAGES: tuple[str, ...] = ("mutation", "sandbox", "evaluation", "timeout", "invalid")
RUN_STATUSES: tuple[str, ...] = ("created", "running", "stopped", "finished", "failed")
ARCHIVE_EVENTS = frozenset({"new_cell", "improved"})
_RANK = {"proposed": 0, "mutated": 1, "evaluated": 2, "archived": 3, "rejected": 3}
_NEEDS_GENOME = frozenset({"mutated", "evaluated", "archived", "rejected"})
_NEEDS_FITNESS = frozenset({"evaluated", "archived", "rejected"})
_OUTCOME_TARGETS = frozenset({"mutated", "evaluated", "archived", "rejected", "failed"})

_SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 30_000
_COMPRESS_MIN = 64  # smaller blobs are never worth a zlib header

_STATS_COLUMNS = (
    "at",
    "children_done",
    "children_failed",
    "children_in_flight",
    "archive_size",
    "coverage",
    "qd_score",
    "best_fitness",
    "mean_fitness",
)


# --------------------------------------------------------------------------------------------
# migrations and named queries (package data, read once)

def _package_dir(sub: str):
    return resources.files(__package__).joinpath(sub)


@functools.lru_cache(maxsize=None)
def _migrations() -> tuple[tuple[int, str, str], ...]:
    """(number, file name, sql) of every migration, in order; numbers must be 1..N."""
    found = []
    for entry in _package_dir("migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_[A-Za-z0-9_]+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"archive_db migrations are not numbered 1..N: {numbers}")
    return tuple(found)


SCHEMA_VERSION: int = len(_migrations())


@functools.lru_cache(maxsize=None)
def _query_text(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", name or ""):
        raise InvalidValueError(f"unknown named query {name!r}; known: {', '.join(query_names())}")
    entry = _package_dir("queries").joinpath(f"{name}.sql")
    if not entry.is_file():
        raise InvalidValueError(f"unknown named query {name!r}; known: {', '.join(query_names())}")
    return entry.read_text(encoding="utf-8")


def query_names() -> list[str]:
    """Names of the SQL files in ``archive_db/queries/`` (without ``.sql``), sorted."""
    return sorted(e.name[:-4] for e in _package_dir("queries").iterdir() if e.name.endswith(".sql"))


def split_sql(script: str) -> list[str]:
    """Split a migration script into statements (trigger bodies included) with sqlite3's parser."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    rest = "\n".join(l for l in buf.splitlines() if l.strip() and not l.strip().startswith("--"))
    if rest.strip():
        raise ArchiveDBError(f"incomplete SQL statement at the end of a script: {rest[:80]!r}")
    return statements


# --------------------------------------------------------------------------------------------
# public records


@dataclass(frozen=True, slots=True)
class Proposal:
    """A child about to be created: written (status ``proposed``) before any remote work."""

    id: int
    parent_id: int | None
    operator: str
    seed: int
    parent2_id: int | None = None
    model: str | None = None


@dataclass(slots=True)
class Outcome:
    """A forward step of one agent. Fields left ``None`` keep the row's current value;
    ``tokens_in``, ``tokens_out`` and ``cost`` are added to the row's running totals."""

    id: int
    status: str
    files: dict[str, bytes] | None = None
    genome_hash: str | None = None
    fitness: float | None = None
    descriptors: Sequence[float] | None = None
    metrics: dict | None = None
    feedback: str | None = None
    eval_seconds: float | None = None
    novelty: float | None = None
    cell: int | None = None
    archive_event: str | None = None
    fail_stage: str | None = None
    fail_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    model: str | None = None
    duplicate_of: int | None = None


# --------------------------------------------------------------------------------------------
# helpers

_loads = json.loads
_AGENT_JSON = ("descriptors", "metrics")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} is not JSON-serialisable with finite numbers: {exc}") from None


def _rows(cursor: sqlite3.Cursor, json_cols: Sequence[str] = _AGENT_JSON) -> list[dict]:
    """Materialise a cursor as dicts, decoding JSON columns. Large results (lineages of 10,000
    agents) pause the cyclic GC while they allocate and decode all JSON cells of a column with
    one ``json.loads`` call: together that halves the cost of a 10,000-row lineage."""
    cols = [d[0] for d in cursor.description]
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        out = [dict(zip(cols, r)) for r in cursor.fetchall()]
        for c in json_cols:
            if c not in cols:
                continue
            cells = [d for d in out if d[c] is not None]
            if not cells:
                continue
            if len(cells) < 16:
                for d in cells:
                    d[c] = _loads(d[c])
            else:
                # every stored cell is valid JSON (CHECK json_valid), so the join is too
                for d, v in zip(cells, _loads("[" + ",".join([d[c] for d in cells]) + "]")):
                    d[c] = v
    finally:
        if gc_was_on:
            gc.enable()
    return out


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidValueError(f"{what} must be an integer, not {value!r}")
    try:
        import operator

        return operator.index(value)
    except TypeError:
        raise InvalidValueError(f"{what} must be an integer, not {value!r}") from None


def _finite(value: Any, what: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(f):
        raise InvalidValueError(f"{what} is not finite ({f})")
    return f


def _ids_json(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _genome_parts(files: Any, what: str, blobs: dict[str, bytes]) -> tuple[str, str, int]:
    """Hash a file tree. Adds its blobs to ``blobs``; returns (genome hash, manifest JSON, bytes)."""
    if not isinstance(files, dict):
        raise InvalidValueError(f"{what}: files must be a dict of path -> bytes, not {type(files).__name__}")
    h = hashlib.sha256()
    manifest: dict[str, str] = {}
    total = 0
    for path in sorted(files):
        content = files[path]
        if not isinstance(path, str) or not path or "\x00" in path or "\n" in path:
            raise InvalidValueError(f"{what}: invalid file path {path!r}")
        if not isinstance(content, bytes):
            if isinstance(content, (bytearray, memoryview)):
                content = bytes(content)
            else:
                raise InvalidValueError(f"{what}: content of {path!r} must be bytes, not {type(content).__name__}")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValueError(f"{what}: file path {path!r} is not valid UTF-8") from None
        bh = hashlib.sha256(content).hexdigest()
        if bh not in blobs:
            blobs[bh] = content
        manifest[path] = bh
        h.update(f"{path}\x00{bh}\n".encode("utf-8"))
        total += len(content)
    return h.hexdigest(), json.dumps(manifest, separators=(",", ":"), sort_keys=True), total


def _check_header(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except IsADirectoryError:
        raise NotADatabaseError(f"{path} is a directory, not an SQLite database") from None
    if len(head) == 0:
        return  # an empty file is a new database
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise NotADatabaseError(f"{path} is not an SQLite database (bad header); refusing to open it")


def genome_hash(files: dict[str, bytes]) -> str:
    """The content address the store gives a file tree (equal trees, equal hashes)."""
    return _genome_parts(files, "genome", {})[0]


def _is_text(data: bytes) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _npy_lines(data: bytes) -> list[str] | None:
    try:
        import numpy as np

        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:
        return None
    lines = [f"# shape {tuple(arr.shape)} dtype {arr.dtype}\n"]
    lines.extend(f"{x!r}\n" for x in arr.ravel().tolist())
    return lines


def _file_diff(path: str, old: bytes | None, new: bytes | None, la: str, lb: str) -> list[str]:
    if old == new:
        return []
    fa = f"a/{path}" if old is not None else "/dev/null"
    fb = f"b/{path}" if new is not None else "/dev/null"
    header_a, header_b = f"{fa}\t({la})", f"{fb}\t({lb})"
    if path.endswith(".npy"):
        oa = _npy_lines(old) if old is not None else []
        ob = _npy_lines(new) if new is not None else []
        if oa is not None and ob is not None:
            return list(difflib.unified_diff(oa, ob, header_a, header_b))
    ta = _is_text(old) if old is not None else ""
    tb = _is_text(new) if new is not None else ""
    if ta is None or tb is None:
        return [f"Binary files {fa} and {fb} differ\n"]
    la_lines = ta.splitlines(keepends=True)
    lb_lines = tb.splitlines(keepends=True)
    out = []
    for line in difflib.unified_diff(la_lines, lb_lines, header_a, header_b):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return out


# --------------------------------------------------------------------------------------------
# the store


class ArchiveDB:
    """One campaign's SQLite store.

    >>> db = ArchiveDB("campaign.db")            # created and migrated if needed
    >>> ro = ArchiveDB("campaign.db", readonly=True)   # never writes; safe beside the writer

    Not for concurrent use from several threads at once (one connection, one transaction).
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = bool(readonly)
        self._tx_depth = 0
        self._savepoint_n = 0
        exists = self.path.exists()
        if readonly and not exists:
            raise FileNotFoundError(f"{self.path}: no such archive database")
        if exists:
            _check_header(self.path)
            self._inspect_readonly()  # refuse before anything could write to the file
        if readonly:
            conn = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(os.fspath(self.path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            version = self._inspect(conn)
            conn.execute("PRAGMA foreign_keys=ON")
            if readonly:
                if version < SCHEMA_VERSION:
                    raise ArchiveDBError(
                        f"{self.path} has schema version {version}, older than {SCHEMA_VERSION}; "
                        "open it once read-write (the writer migrates it) before reading it read-only"
                    )
                conn.execute("PRAGMA query_only=ON")
            else:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ArchiveDBError(f"{self.path}: could not switch to WAL mode (got {mode!r})")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA cache_size=-65536")
                conn.execute("PRAGMA wal_autocheckpoint=4000")
                self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        self._ndesc_cache: tuple[bool, int | None] | None = None

    # ---- opening ------------------------------------------------------------------------

    def _inspect_readonly(self) -> None:
        """Check version and validity through a read-only connection (it never checkpoints)."""
        try:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return  # fall back to the checks on the main connection
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._inspect(conn)
        except sqlite3.OperationalError:
            pass  # e.g. a WAL file we may not open read-only: the main connection checks again
        finally:
            conn.close()

    def _inspect(self, conn: sqlite3.Connection) -> int:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        except sqlite3.OperationalError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise NotADatabaseError(f"{self.path} is not a valid SQLite database ({exc})") from None
            raise
        except sqlite3.DatabaseError as exc:
            raise NotADatabaseError(f"{self.path} is not a valid SQLite database ({exc})") from None
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"{self.path} has schema version {version}, but this archive_db supports up to "
                f"version {SCHEMA_VERSION}; upgrade openended to open it"
            )
        if version == 0 and any(not n.startswith("sqlite_") for n in names):
            raise NotADatabaseError(
                f"{self.path} is an SQLite database but not an openended archive "
                f"(user_version 0 with tables {sorted(names)[:5]})"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        for number, name, script in _migrations():
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current >= number:
                    conn.execute("COMMIT")
                    continue
                if current != number - 1:
                    raise ArchiveDBError(f"{self.path}: cannot apply {name} to schema version {current}")
                for statement in split_sql(script):
                    conn.execute(statement)
                conn.execute("UPDATE runs SET schema_version = ?", (number,))
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            self.conn = None  # type: ignore[assignment]

    def __enter__(self) -> "ArchiveDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ArchiveDB {str(self.path)!r}{' readonly' if self.readonly else ''}>"

    # ---- transactions -------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise ArchiveDBError(f"{self.path} is open read-only")

    @contextlib.contextmanager
    def transaction(self) -> Iterator["ArchiveDB"]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error). Nested blocks join the
        outer transaction through a savepoint: an error inside undoes only the inner block."""
        self._writable()
        conn = self.conn
        if self._tx_depth:
            self._savepoint_n += 1
            sp = f"archive_db_{self._savepoint_n}"
            conn.execute(f"SAVEPOINT {sp}")
            self._tx_depth += 1
            try:
                yield self
            except BaseException:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {sp}")
                    conn.execute(f"RELEASE {sp}")
                raise
            else:
                conn.execute(f"RELEASE {sp}")
            finally:
                self._tx_depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._tx_depth = 1
        try:
            yield self
        except BaseException:
            self._tx_depth = 0
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            self._tx_depth = 0
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ---- run header ---------------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str,
        task: str,
        seed: int,
        config: dict,
        descriptor_schema: dict,
        state: dict | None = None,
    ) -> None:
        """Write the single run row. ``RunExistsError`` if the database already holds a run."""
        row = {
            "id": 1,
            "name": str(name),
            "task": str(task),
            "seed": _as_int(seed, "seed"),
            "config": _dumps(config, "config"),
            "descriptor_schema": _dumps(descriptor_schema, "descriptor_schema"),
            "state": _dumps(state if state is not None else {}, "state"),
            "status": "created",
            "created_at": time.time(),
            "schema_version": SCHEMA_VERSION,
        }
        row["updated_at"] = row["created_at"]
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM runs").fetchone():
                raise RunExistsError(f"{self.path} already holds a run; one database is one campaign")
            self.db["runs"].insert(row)
        self._ndesc_cache = None

    def get_run(self) -> dict | None:
        rows = _rows(self.conn.execute("SELECT * FROM runs WHERE id = 1"), ("config", "descriptor_schema", "state"))
        return rows[0] if rows else None

    def update_run(self, *, status: str | None = None, state: dict | None = None) -> None:
        if status is not None and status not in RUN_STATUSES:
            raise InvalidValueError(f"run status must be one of {RUN_STATUSES}, not {status!r}")
        state_json = _dumps(state, "state") if state is not None else None
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE runs SET status = COALESCE(?, status), state = COALESCE(?, state), updated_at = ? WHERE id = 1",
                (status, state_json, time.time()),
            )
            if cur.rowcount == 0:
                raise ArchiveDBError(f"{self.path} holds no run yet; call create_run first")

    def _descriptor_len(self) -> int | None:
        if self._ndesc_cache is None:
            row = self.conn.execute("SELECT descriptor_schema FROM runs WHERE id = 1").fetchone()
            n = None
            if row is not None:
                schema = _loads(row[0])
                # flat {"names": [...]} or an archive schema {"space": {"names": [...]}, ...}
                names = schema.get("names") or (schema.get("space") or {}).get("names")
                if isinstance(names, (list, tuple)):
                    n = len(names)
                self._ndesc_cache = (True, n)
            return n
        return self._ndesc_cache[1]

    # ---- genomes ------------------------------------------------------------------------

    def _store_genomes(self, genomes: dict[str, tuple[str, int]], blobs: dict[str, bytes]) -> None:
        conn = self.conn
        if blobs:
            existing = {
                r[0]
                for r in conn.execute(
                    "SELECT hash FROM blobs WHERE hash IN (SELECT value FROM json_each(?))", (json.dumps(list(blobs)),)
                )
            }
            rows = []
            for bh, content in blobs.items():
                if bh in existing:
                    continue
                if len(content) >= _COMPRESS_MIN:
                    z = zlib.compress(content, 6)
                    if len(z) < len(content):
                        rows.append((bh, z, 1, len(content)))
                        continue
                rows.append((bh, content, 0, len(content)))
            conn.executemany("INSERT OR IGNORE INTO blobs(hash, content, compressed, size) VALUES (?, ?, ?, ?)", rows)
        if genomes:
            conn.executemany(
                "INSERT OR IGNORE INTO genomes(hash, manifest, total_bytes) VALUES (?, ?, ?)",
                [(gh, m, t) for gh, (m, t) in genomes.items()],
            )

    def put_genome(self, files: dict[str, bytes]) -> str:
        """Store a file tree content-addressed; returns its genome hash."""
        blobs: dict[str, bytes] = {}
        gh, manifest, total = _genome_parts(files, "genome", blobs)
        with self.transaction():
            self._store_genomes({gh: (manifest, total)}, blobs)
        return gh

    def get_genome(self, genome_hash: str) -> dict[str, bytes]:
        row = self.conn.execute("SELECT manifest FROM genomes WHERE hash = ?", (genome_hash,)).fetchone()
        if row is None:
            raise InvalidValueError(f"unknown genome hash {genome_hash!r}")
        manifest = _loads(row[0])
        wanted = set(manifest.values())
        blobs = {}
        for h, content, compressed in self.conn.execute(
            "SELECT hash, content, compressed FROM blobs WHERE hash IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(wanted)),),
        ):
            blobs[h] = zlib.decompress(content) if compressed else bytes(content)
        missing = wanted - blobs.keys()
        if missing:
            raise ArchiveDBError(f"genome {genome_hash} references missing blobs {sorted(missing)[:3]}")
        return {path: blobs[h] for path, h in sorted(manifest.items())}

    def agent_files(self, agent_id: int) -> dict[str, bytes]:
        """The agent's files; ``{}`` while it has no genome yet (proposed, or failed in mutation)."""
        gh = self._agent_field(agent_id, "genome_hash")
        return self.get_genome(gh) if gh is not None else {}

    def diff(self, a: int, b: int | None = None) -> str:
        """Unified diff from agent ``a``'s files to agent ``b``'s. With ``b`` None: from ``a``'s
        parent to ``a`` (a root is diffed against an empty tree). ``.npy`` arrays are shown one
        value per line; other binary files as ``Binary files ... differ``."""
        if b is None:
            parent = self._agent_field(a, "parent_id")
            old, new = (self.agent_files(parent) if parent is not None else {}), self.agent_files(a)
            la, lb = (f"agent {parent}" if parent is not None else "empty"), f"agent {a}"
        else:
            old, new = self.agent_files(a), self.agent_files(b)
            la, lb = f"agent {a}", f"agent {b}"
        out: list[str] = []
        for path in sorted(old.keys() | new.keys()):
            out.extend(_file_diff(path, old.get(path), new.get(path), la, lb))
        return "".join(out)

    # ---- lifecycle ----------------------------------------------------------------------

    def propose(self, proposals: Iterable[Proposal]) -> None:
        """Write new children (status ``proposed``) with their parents, operators and seeds.
        Depth is computed here. Parents must already exist or come earlier in the batch."""
        self._writable()
        props = list(proposals)
        if not props:
            return
        seen: set[int] = set()
        parents: set[int] = set()
        for p in props:
            if not isinstance(p, Proposal):
                raise InvalidValueError(f"propose() takes Proposal objects, not {type(p).__name__}")
            pid = _as_int(p.id, "agent id")
            if pid < 0:
                raise InvalidValueError(f"agent id must be >= 0, not {pid}")
            if pid in seen:
                raise InvalidValueError(f"agent id {pid} appears twice in one propose() batch")
            seen.add(pid)
            for field in ("parent_id", "parent2_id"):
                value = getattr(p, field)
                if value is None:
                    continue
                parent = _as_int(value, f"agent {pid}: {field}")
                # Lineage queries rely on it: a parent is always proposed before its child.
                if parent >= pid:
                    raise InvalidValueError(f"agent {pid}: {field} {parent} must be a smaller id than the child's")
                parents.add(parent)
            if not isinstance(p.operator, str) or not p.operator:
                raise InvalidValueError(f"agent {pid}: operator must be a non-empty string")
            _as_int(p.seed, f"agent {pid}: seed")
        now = time.time()
        conn = self.conn
        with self.transaction():
            dup = conn.execute(
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?)) LIMIT 1", (_ids_json(seen),)
            ).fetchone()
            if dup:
                raise InvalidValueError(f"agent id {dup[0]} already exists")
            depth = dict(
                conn.execute(
                    "SELECT id, depth FROM agents WHERE id IN (SELECT value FROM json_each(?))",
                    (_ids_json(parents - seen),),
                ).fetchall()
            ) if parents - seen else {}
            rows = []
            for p in props:
                d = 0
                if p.parent_id is not None:
                    if p.parent_id not in depth:
                        raise UnknownAgentError(
                            f"unknown parent id {p.parent_id} for agent {p.id} "
                            "(parents must exist or be proposed earlier in the batch)"
                        )
                    d = depth[p.parent_id] + 1
                if p.parent2_id is not None and p.parent2_id not in depth:
                    raise UnknownAgentError(f"unknown parent2 id {p.parent2_id} for agent {p.id}")
                depth[p.id] = d
                rows.append((p.id, p.parent_id, p.parent2_id, d, p.operator, p.model, int(p.seed), now))
            conn.executemany(
                "INSERT INTO agents(id, parent_id, parent2_id, depth, status, operator, model, seed, created_at) "
                "VALUES (?, ?, ?, ?, 'proposed', ?, ?, ?, ?)",
                rows,
            )

    _UPDATE_SQL = (
        "UPDATE agents SET status = ?, genome_hash = COALESCE(?, genome_hash), fitness = COALESCE(?, fitness), "
        "descriptors = COALESCE(?, descriptors), metrics = COALESCE(?, metrics), feedback = COALESCE(?, feedback), "
        "eval_seconds = COALESCE(?, eval_seconds), novelty = COALESCE(?, novelty), cell = COALESCE(?, cell), "
        "archive_event = COALESCE(?, archive_event), fail_stage = COALESCE(?, fail_stage), "
        "fail_reason = COALESCE(?, fail_reason), tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, "
        "cost = cost + ?, model = COALESCE(?, model), duplicate_of = COALESCE(?, duplicate_of), "
        "mutated_at = COALESCE(mutated_at, ?), evaluated_at = COALESCE(evaluated_at, ?), "
        "finished_at = COALESCE(finished_at, ?), finish_seq = COALESCE(finish_seq, ?) WHERE id = ?"
    )

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Apply a batch of forward steps. Everything is validated first; on any error this
        raises (UnknownAgentError, InvalidValueError, InvalidTransitionError) and writes nothing."""
        self._writable()
        outs = list(outcomes)
        if not outs:
            return
        conn = self.conn
        ids = []
        for o in outs:
            if not isinstance(o, Outcome):
                raise InvalidValueError(f"record() takes Outcome objects, not {type(o).__name__}")
            ids.append(_as_int(o.id, "agent id"))
        with self.transaction():
            state = {
                r[0]: [r[1], r[2], r[3]]
                for r in conn.execute(
                    "SELECT id, status, genome_hash IS NOT NULL, fitness IS NOT NULL AND descriptors IS NOT NULL "
                    "FROM agents WHERE id IN (SELECT value FROM json_each(?))",
                    (_ids_json(set(ids)),),
                )
            }
            ndesc = self._descriptor_len()
            now = time.time()
            blobs: dict[str, bytes] = {}
            genomes: dict[str, tuple[str, int]] = {}
            known_hashes: set[str] = set()
            dup_refs: set[int] = set()
            seq = None
            rows = []
            for o, aid in zip(outs, ids):
                st = state.get(aid)
                if st is None:
                    raise UnknownAgentError(f"unknown agent id {aid}")
                cur, has_genome, has_fit = st
                tgt = o.status
                if tgt not in _OUTCOME_TARGETS:
                    if tgt in STATUSES:
                        raise InvalidTransitionError(f"agent {aid}: illegal status transition {cur} -> {tgt}")
                    raise InvalidValueError(f"agent {aid}: unknown status {tgt!r}; expected one of {STATUSES}")
                if cur in TERMINAL_STATUSES:
                    raise InvalidTransitionError(
                        f"agent {aid}: illegal status transition {cur} -> {tgt} ({cur} is terminal)"
                    )
                if tgt != "failed" and _RANK[tgt] <= _RANK[cur]:
                    raise InvalidTransitionError(
                        f"agent {aid}: illegal status transition {cur} -> {tgt} (not a forward move)"
                    )
                gh = None
                if o.files is not None:
                    gh, manifest, total = _genome_parts(o.files, f"agent {aid}", blobs)
                    genomes[gh] = (manifest, total)
                    if o.genome_hash is not None and o.genome_hash != gh:
                        raise InvalidValueError(
                            f"agent {aid}: genome_hash {o.genome_hash} does not match the files given ({gh})"
                        )
                elif o.genome_hash is not None:
                    if not isinstance(o.genome_hash, str):
                        raise InvalidValueError(f"agent {aid}: genome_hash must be a string")
                    gh = o.genome_hash
                    if gh not in genomes:
                        known_hashes.add(gh)
                fitness = None if o.fitness is None else _finite(o.fitness, f"agent {aid}: fitness")
                novelty = None if o.novelty is None else _finite(o.novelty, f"agent {aid}: novelty")
                desc_json = None
                if o.descriptors is not None:
                    try:
                        desc = [float(x) for x in o.descriptors]
                    except (TypeError, ValueError):
                        raise InvalidValueError(
                            f"agent {aid}: descriptors must be a sequence of numbers, not {o.descriptors!r}"
                        ) from None
                    if ndesc is not None and len(desc) != ndesc:
                        raise InvalidValueError(
                            f"agent {aid}: descriptors have length {len(desc)}, expected {ndesc} "
                            "(len(descriptor_schema['names']))"
                        )
                    for x in desc:
                        if not math.isfinite(x):
                            raise InvalidValueError(f"agent {aid}: descriptors contain a non-finite value ({x})")
                    desc_json = json.dumps(desc)
                eval_seconds = None
                if o.eval_seconds is not None:
                    eval_seconds = _finite(o.eval_seconds, f"agent {aid}: eval_seconds")
                has_genome = has_genome or gh is not None
                has_fit = has_fit or (fitness is not None and desc_json is not None)
                if tgt in _NEEDS_GENOME and not has_genome:
                    raise InvalidTransitionError(
                        f"agent {aid}: illegal status transition {cur} -> {tgt}: no genome (give files or genome_hash)"
                    )
                if tgt in _NEEDS_FITNESS and not has_fit:
                    raise InvalidTransitionError(
                        f"agent {aid}: illegal status transition {cur} -> {tgt}: needs fitness and descriptors"
                    )
                if tgt == "failed":
                    if o.fail_stage not in FAIL_STAGES:
                        raise InvalidValueError(
                            f"agent {aid}: fail_stage must be one of {FAIL_STAGES}, not {o.fail_stage!r}"
                        )
                    if not isinstance(o.fail_reason, str) or not o.fail_reason:
                        raise InvalidValueError(f"agent {aid}: a failed outcome needs a fail_reason")
                elif o.fail_stage is not None or o.fail_reason is not None:
                    raise InvalidValueError(f"agent {aid}: fail_stage/fail_reason given for status {tgt!r}")
                if o.archive_event is not None and o.archive_event not in ARCHIVE_EVENTS:
                    raise InvalidValueError(
                        f"agent {aid}: archive_event must be 'new_cell', 'improved' or None, not {o.archive_event!r}"
                    )
                cell = None if o.cell is None else _as_int(o.cell, f"agent {aid}: cell")
                metrics = None if o.metrics is None else _dumps(o.metrics, f"agent {aid}: metrics")
                tin = _as_int(o.tokens_in, f"agent {aid}: tokens_in")
                tout = _as_int(o.tokens_out, f"agent {aid}: tokens_out")
                cost = _finite(o.cost, f"agent {aid}: cost")
                if tin < 0 or tout < 0 or cost < 0:
                    raise InvalidValueError(f"agent {aid}: tokens and cost must be >= 0")
                dup = None
                if o.duplicate_of is not None:
                    dup = _as_int(o.duplicate_of, f"agent {aid}: duplicate_of")
                    dup_refs.add(dup)
                finish_seq = finished_at = None
                if tgt in TERMINAL_STATUSES:
                    if seq is None:
                        seq = conn.execute("SELECT COALESCE(MAX(finish_seq), 0) FROM agents WHERE finish_seq IS NOT NULL").fetchone()[0]
                    seq += 1
                    finish_seq, finished_at = seq, now
                st[0], st[1], st[2] = tgt, has_genome, has_fit
                rows.append((
                    tgt, gh, fitness, desc_json, metrics, o.feedback, eval_seconds, novelty, cell,
                    o.archive_event, o.fail_stage, o.fail_reason, tin, tout, cost, o.model, dup,
                    now if gh is not None or tgt in _NEEDS_GENOME else None,
                    now if fitness is not None or tgt in _NEEDS_FITNESS else None,
                    finished_at, finish_seq, aid,
                ))
            if known_hashes:
                found = {
                    r[0]
                    for r in conn.execute(
                        "SELECT hash FROM genomes WHERE hash IN (SELECT value FROM json_each(?))",
                        (json.dumps(sorted(known_hashes)),),
                    )
                }
                missing = known_hashes - found
                if missing:
                    raise InvalidValueError(f"unknown genome hash {sorted(missing)[0]!r} in record()")
            if dup_refs:
                found = {
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?))", (_ids_json(dup_refs),)
                    )
                }
                if dup_refs - found:
                    raise UnknownAgentError(f"duplicate_of names unknown agent id {min(dup_refs - found)}")
            self._store_genomes(genomes, blobs)
            conn.executemany(self._UPDATE_SQL, rows)

    def add_evaluation(
        self,
        agent_id: int,
        *,
        stage: str,
        seconds: float,
        exit_status: int | None = None,
        fitness: float | None = None,
        result: dict | None = None,
        stdout_tail: str = "",
        stderr_tail: str = "",
        failure_kind: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Record one evaluation stage of an agent (several per agent allowed)."""
        self.add_evaluations([dict(agent_id=agent_id, stage=stage, seconds=seconds, exit_status=exit_status,
                                   fitness=fitness, result=result, stdout_tail=stdout_tail, stderr_tail=stderr_tail,
                                   failure_kind=failure_kind, started_at=started_at)])

    def add_evaluations(self, evaluations: Iterable[dict]) -> None:
        """Record many evaluations at once; each dict takes add_evaluation's keyword arguments plus ``agent_id``."""
        self._writable()
        rows = []
        ids = set()
        for ev in evaluations:
            agent_id = _as_int(ev["agent_id"], "evaluation agent_id")
            ids.add(agent_id)
            seconds = _finite(ev["seconds"], f"agent {agent_id}: seconds")
            fitness = ev.get("fitness")
            fit = None if fitness is None else _finite(fitness, f"agent {agent_id}: evaluation fitness")
            result = ev.get("result")
            res = None if result is None else _dumps(result, f"agent {agent_id}: result")
            started_at = ev.get("started_at")
            rows.append((agent_id, str(ev["stage"]), time.time() - seconds if started_at is None else float(started_at),
                         seconds, ev.get("exit_status"), fit, res, ev.get("stdout_tail") or "",
                         ev.get("stderr_tail") or "", ev.get("failure_kind")))
        if not rows:
            return
        with self.transaction():
            known = {r[0] for r in self.conn.execute(
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?))", (_ids_json(ids),))}
            if ids - known:
                raise UnknownAgentError(f"unknown agent id {min(ids - known)}")
            self.conn.executemany(
                "INSERT INTO evaluations(agent_id, stage, started_at, seconds, exit_status, fitness, result, "
                "stdout_tail, stderr_tail, failure_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def evaluations(self, agent_id: int) -> list[dict]:
        return _rows(self.conn.execute("SELECT * FROM evaluations WHERE agent_id = ? ORDER BY id", (agent_id,)),
                     ("result",))

    # ---- archive occupancy --------------------------------------------------------------

    def set_elites(self, elites: dict[int, int]) -> None:
        """Upsert cell -> agent_id; the elite's fitness is copied from the agent row."""
        self._writable()
        pairs = [(_as_int(c, "cell"), _as_int(a, "agent id")) for c, a in dict(elites).items()]
        if not pairs:
            return
        now = time.time()
        with self.transaction():
            agent_ids = {a for _, a in pairs}
            found = {r[0] for r in self.conn.execute(
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?))", (_ids_json(agent_ids),))}
            if agent_ids - found:
                raise UnknownAgentError(f"unknown agent id {min(agent_ids - found)} in set_elites()")
            self.conn.executemany(
                "INSERT INTO elites(cell, agent_id, fitness, updated_at) "
                "SELECT ?, id, fitness, ? FROM agents WHERE id = ? "
                "ON CONFLICT(cell) DO UPDATE SET agent_id = excluded.agent_id, fitness = excluded.fitness, "
                "updated_at = excluded.updated_at",
                [(c, now, a) for c, a in pairs],
            )

    def remove_elites(self, cells: Iterable[int]) -> None:
        self._writable()
        cells = [(_as_int(c, "cell"),) for c in cells]
        with self.transaction():
            self.conn.executemany("DELETE FROM elites WHERE cell = ?", cells)

    def elites(self) -> list[dict]:
        return _rows(self.conn.execute(
            "SELECT e.cell, e.agent_id, e.fitness, a.descriptors, a.novelty FROM elites e "
            "JOIN agents a ON a.id = e.agent_id ORDER BY e.cell"
        ))

    # ---- stats --------------------------------------------------------------------------

    def record_stats(self, **snapshot: Any) -> None:
        """Append a progress snapshot. Known keys go to columns (``at`` defaults to now), any
        other key (and an ``extra`` dict) goes into the ``extra`` JSON column."""
        self._writable()
        extra = dict(snapshot.pop("extra", None) or {})
        row: dict[str, Any] = {}
        for key, value in snapshot.items():
            if key in _STATS_COLUMNS:
                if value is not None and isinstance(value, float) and not math.isfinite(value):
                    raise InvalidValueError(f"stats {key} is not finite ({value})")
                row[key] = value
            else:
                extra[key] = value
        row.setdefault("at", time.time())
        row["extra"] = _dumps(extra, "stats extra")
        with self.transaction():
            self.db["stats"].insert(row)

    def stats_history(self) -> list[dict]:
        return _rows(self.conn.execute("SELECT * FROM stats ORDER BY at, id"), ("extra",))

    # ---- reading ------------------------------------------------------------------------

    def _agent_field(self, agent_id: int, column: str) -> Any:
        row = self.conn.execute(f"SELECT {column} FROM agents WHERE id = ?", (agent_id,)).fetchone()
        if row is None:
            raise UnknownAgentError(f"unknown agent id {agent_id}")
        return row[0]

    def agent(self, agent_id: int) -> dict:
        rows = _rows(self.conn.execute("SELECT * FROM agents WHERE id = ?", (agent_id,)))
        if not rows:
            raise UnknownAgentError(f"unknown agent id {agent_id}")
        return rows[0]

    def next_agent_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM agents").fetchone()[0]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        out.update(self.conn.execute("SELECT status, COUNT(*) FROM agents GROUP BY status").fetchall())
        return out

    def progress_counts(self, counts: dict[str, int] | None = None) -> dict[str, int]:
        """done (evaluated, archived or rejected), failed, and pending (proposed or mutated: left for resume)."""
        c = self.counts() if counts is None else counts
        return {"done": c["evaluated"] + c["archived"] + c["rejected"], "failed": c["failed"],
                "pending": c["proposed"] + c["mutated"]}

    def query_names(self) -> list[str]:
        return query_names()

    def named_query(self, name: str, **params: Any) -> list[dict]:
        """Run ``archive_db/queries/<name>.sql`` with named parameters; JSON columns decoded."""
        sql = _query_text(name)
        try:
            return _rows(self.conn.execute(sql, params), _AGENT_JSON + ("result", "extra"))
        except sqlite3.ProgrammingError as exc:
            raise InvalidValueError(f"named query {name!r}: {exc}") from None

    def agents_by_status(self, status: str, limit: int | None = None) -> list[dict]:
        if status not in STATUSES:
            raise InvalidValueError(f"status must be one of {STATUSES}, not {status!r}")
        return self.named_query("agents_by_status", status=status, limit=-1 if limit is None else int(limit))

    def ancestors(self, agent_id: int) -> list[dict]:
        """Root first, the agent itself last."""
        rows = self.named_query("ancestors", agent_id=agent_id)
        if not rows:
            raise UnknownAgentError(f"unknown agent id {agent_id}")
        return rows

    def descendants(self, agent_id: int) -> list[dict]:
        """Every agent below ``agent_id`` (itself excluded), by depth then id."""
        self._agent_field(agent_id, "id")
        return self.named_query("descendants", agent_id=agent_id)

    def genome_firsts(self) -> dict[str, int]:
        """Each genome hash -> the agent whose result stands for it: one already evaluated if any
        (the first such), else the first still waiting for evaluation; duplicates never."""
        firsts: dict[str, int] = {}
        for genome, agent_id in self.conn.execute(
                "SELECT genome_hash, id FROM agents WHERE genome_hash IS NOT NULL AND duplicate_of IS NULL "
                "ORDER BY status = 'mutated', id"):
            firsts.setdefault(genome, agent_id)
        return firsts

    def last_mutation_errors(self) -> dict[int, str]:
        """Each parent -> the reason its most recent child failed at mutation (fed into the next prompt)."""
        return dict(self.conn.execute(
            "SELECT parent_id, fail_reason FROM agents WHERE fail_stage = 'mutation' AND parent_id IS NOT NULL "
            "ORDER BY id"))

    def children_counts(self) -> dict[int, int]:
        return dict(self.conn.execute(_query_text("children_counts")).fetchall())

    def best_agent(self) -> dict | None:
        rows = self.named_query("top_by_fitness", k=1)
        return rows[0] if rows else None

    def best_lineage(self) -> list[dict]:
        return self.named_query("best_lineage")

    def stepping_stones(self) -> list[dict]:
        return self.named_query("stepping_stones")

    def top_k(self, k: int = 10, by: str = "fitness") -> list[dict]:
        if by not in ("fitness", "novelty"):
            raise InvalidValueError(f"top_k(by=...) must be 'fitness' or 'novelty', not {by!r}")
        return self.named_query(f"top_by_{by}", k=_as_int(k, "k"))

    def discovery_counts(self) -> dict[int, int]:
        """Per parent: how many of its children entered a new archive cell."""
        return dict(self.conn.execute(_query_text("discovery_counts")).fetchall())

    def usage_totals(self) -> dict[str, float]:
        """Tokens and cost spent by every child so far (the foundation-model budgets)."""
        tokens, cost = self.conn.execute(
            "SELECT COALESCE(SUM(tokens_in + tokens_out), 0), COALESCE(SUM(cost), 0.0) FROM agents").fetchone()
        return {"tokens": int(tokens), "cost": float(cost)}

    def latest_stats(self) -> dict | None:
        """The most recent stats snapshot, or None before the first."""
        rows = _rows(self.conn.execute("SELECT * FROM stats ORDER BY id DESC LIMIT 1"), ("extra",))
        return rows[0] if rows else None

    def elite_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM elites").fetchone()[0]
