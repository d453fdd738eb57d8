"""Content-addressed genome storage.

A genome is a file tree (path -> bytes). Each file's content is stored once as a blob, keyed by its
sha256; a genome is a manifest {path: blob hash} keyed by the sha256 over its sorted (path, blob hash)
pairs, so equal trees share one row. A blob is stored as the smallest of: its bytes, zlib, and (given a
base, the same file of the agent's parent, and a file zlib can shrink) zstd with the base's content as a
dictionary, a delta that a read decodes through at most :data:`MAX_DELTA_DEPTH` bases and checks against
the blob's hash.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import zstandard

from openended.names import genome_path_problem

from .errors import ArchiveDBError, InvalidValueError

_COMPRESS_MIN = 64  # smaller blobs are never worth a zlib header
MAX_DELTA_DEPTH = 16  # deltas one read decodes at most: past it a file is stored whole again
_DELTA_LEVEL = 9  # as small as 19 on program-sized deltas, at a sixteenth of the time
_DELTA_MAX_BYTES = 1 << 20  # larger files are stored whole: a delta of them costs time inside the write lock


@dataclass(frozen=True, slots=True)
class GenomeParts:
    """A hashed file tree, ready to store."""

    hash: str
    manifest: str  # JSON {path: blob hash}, sorted
    total_bytes: int
    blobs: dict[str, bytes]  # blob hash -> content
    files: dict[str, bytes]  # path -> content, as given (bytes)


def genome_parts(files: object, what: str = "genome") -> GenomeParts:
    """Hash a file tree; InvalidValueError (naming ``what``) for anything but a dict path -> bytes whose
    paths pass :func:`openended.names.genome_path_problem` (the store holds no name a genome source refuses)."""
    if not isinstance(files, dict):
        raise InvalidValueError(f"{what}: files must be a dict of path -> bytes, not {type(files).__name__}")
    h = hashlib.sha256()
    manifest: dict[str, str] = {}
    blobs: dict[str, bytes] = {}
    given: dict[str, bytes] = {}
    total = 0
    for path in sorted(files):
        content = files[path]
        problem = genome_path_problem(path)
        if problem is not None:
            raise InvalidValueError(f"{what}: {problem}")
        if not isinstance(content, bytes):
            if isinstance(content, (bytearray, memoryview)):
                content = bytes(content)
            else:
                raise InvalidValueError(f"{what}: content of {path!r} must be bytes, not {type(content).__name__}")
        bh = hashlib.sha256(content).hexdigest()
        blobs.setdefault(bh, content)
        manifest[path] = bh
        given[path] = content
        h.update(f"{path}\x00{bh}\n".encode())
        total += len(content)
    return GenomeParts(h.hexdigest(), json.dumps(manifest, separators=(",", ":"), sort_keys=True), total, blobs,
                       given)


def genome_hash(files: dict[str, bytes]) -> str:
    """The content address the store gives a file tree (equal trees, equal hashes)."""
    return genome_parts(files).hash


def _dictionary(base: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def _delta(content: bytes, base: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_DELTA_LEVEL, dict_data=_dictionary(base), write_checksum=False,
                                    write_dict_id=False).compress(content)


def store_genomes(conn: sqlite3.Connection, genomes: Mapping[str, GenomeParts],
                  bases: Callable[[], Mapping[str, str]] | None = None) -> None:
    """Insert genomes (by hash) and the blobs they hold that are not stored yet. ``bases``: gives a new blob's
    hash -> a stored blob it may be kept as a delta of (the same file in the parent); called only when a new
    blob could be one. The caller holds the transaction."""
    blobs: dict[str, bytes] = {}
    for g in genomes.values():
        blobs.update(g.blobs)
    if blobs:
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT hash FROM blobs WHERE hash IN (SELECT value FROM json_each(?))", (json.dumps(list(blobs)),)
            )
        }
        rows: dict[str, tuple] = {}
        for bh, content in blobs.items():
            if bh in existing:
                continue
            row = (bh, content, 0, len(content), None, 0)
            if len(content) >= _COMPRESS_MIN:
                z = zlib.compress(content, 6)
                if len(z) < len(content):
                    row = (bh, z, 1, len(content), None, 0)
            rows[bh] = row
        # A delta is tried only for a file zlib could shrink: noise (random weights, already compressed data)
        # gains nothing from its parent's, and decoding the base plus a zstd pass cost a fifth of the inserts.
        candidates = [bh for bh, row in rows.items() if row[2] == 1 and row[3] <= _DELTA_MAX_BYTES]
        known = bases() if candidates and bases is not None else {}
        tries = {bh: known[bh] for bh in candidates if bh in known}
        base_rows = {h: (bid, depth) for h, bid, depth in conn.execute(
            "SELECT hash, id, depth FROM blobs WHERE hash IN (SELECT value FROM json_each(?)) AND depth < ?",
            (json.dumps(sorted(set(tries.values()))), MAX_DELTA_DEPTH))} if tries else {}
        base_content = blob_contents(conn, base_rows) if base_rows else {}
        for bh, base in tries.items():
            if base in base_content:
                d = _delta(blobs[bh], base_content[base])
                if len(d) < len(rows[bh][1]):
                    bid, depth = base_rows[base]
                    rows[bh] = (bh, d, 1, len(blobs[bh]), bid, depth + 1)
        conn.executemany("INSERT OR IGNORE INTO blobs(hash, content, compressed, size, base, depth) "
                         "VALUES (?, ?, ?, ?, ?, ?)", list(rows.values()))
    if genomes:
        conn.executemany(
            "INSERT OR IGNORE INTO genomes(hash, manifest, total_bytes) VALUES (?, ?, ?)",
            [(g.hash, g.manifest, g.total_bytes) for g in genomes.values()],
        )


_BLOB_COLUMNS = "id, hash, content, compressed, size, base"


def blob_contents(conn: sqlite3.Connection, hashes: Iterable[str]) -> dict[str, bytes]:
    """Blob hash -> content, for those of ``hashes`` the store holds. A delta is decoded through its bases and
    checked against its hash: ArchiveDBError naming the blob when it cannot be, never wrong bytes."""
    rows = conn.execute(f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE hash IN (SELECT value FROM json_each(?))",
                        (json.dumps(sorted(set(hashes))),)).fetchall()
    by_id = {r[0]: r for r in rows}
    missing = {r[5] for r in rows if r[5] is not None} - by_id.keys()
    if missing:  # every base down each chain, in one query
        for r in conn.execute(
                "WITH RECURSIVE chain(id) AS (SELECT value FROM json_each(?) UNION "
                "SELECT b.base FROM chain JOIN blobs AS b ON b.id = chain.id WHERE b.base IS NOT NULL) "
                f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE id IN (SELECT id FROM chain)",
                (json.dumps(sorted(missing)),)):
            by_id.setdefault(r[0], r)
    plain: dict[int, bytes] = {}
    return {r[1]: _decode(r[0], by_id, plain) for r in rows}


def _decode(blob_id: int, by_id: dict, plain: dict[int, bytes]) -> bytes:
    chain = [blob_id]  # this blob, then its bases down to one stored whole (or decoded already)
    while chain[-1] not in plain and by_id[chain[-1]][5] is not None:
        base = by_id[chain[-1]][5]
        if base not in by_id:
            raise ArchiveDBError(f"blob {by_id[chain[-1]][1][:12]}: its delta base (blob id {base}) is missing")
        if len(chain) > MAX_DELTA_DEPTH:
            raise ArchiveDBError(f"blob {by_id[blob_id][1][:12]}: a delta chain longer than {MAX_DELTA_DEPTH}")
        chain.append(base)
    for bid in reversed(chain):
        if bid in plain:
            continue
        _id, h, content, compressed, size, base = by_id[bid]
        if base is None:
            try:
                plain[bid] = zlib.decompress(content) if compressed else bytes(content)
            except zlib.error as exc:
                raise ArchiveDBError(f"blob {h[:12]}: does not decompress ({exc})") from None
            continue
        try:
            data = zstandard.ZstdDecompressor(dict_data=_dictionary(plain[base])).decompress(
                content, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ArchiveDBError(f"blob {h[:12]}: its delta does not decompress ({exc})") from None
        if len(data) != size or hashlib.sha256(data).hexdigest() != h:
            raise ArchiveDBError(f"blob {h[:12]}: its delta decodes to bytes that do not match its hash")
        plain[bid] = data
    return plain[blob_id]


def load_genome(conn: sqlite3.Connection, genome_hash: str) -> dict[str, bytes]:
    """The file tree stored under ``genome_hash``, paths sorted."""
    files = load_materialised(conn, genome_hash)
    if files is None:
        raise InvalidValueError(f"unknown genome hash {genome_hash!r}")
    return files


def load_materialised(conn: sqlite3.Connection, genome_hash: str) -> dict[str, bytes] | None:
    """The file tree stored in full under ``genome_hash``; None when no genomes row holds it (it may be a
    compact genome: :mod:`archive_db.recipes`)."""
    row = conn.execute("SELECT manifest FROM genomes WHERE hash = ?", (genome_hash,)).fetchone()
    if row is None:
        return None
    manifest: dict[str, str] = json.loads(row[0])
    blobs = blob_contents(conn, manifest.values())
    missing = set(manifest.values()) - blobs.keys()
    if missing:
        raise ArchiveDBError(f"genome {genome_hash} references missing blobs {sorted(missing)[:3]}")
    return {path: blobs[h] for path, h in sorted(manifest.items())}
