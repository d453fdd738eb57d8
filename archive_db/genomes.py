"""Content-addressed genome storage.

A genome is a file tree (path -> bytes). Each file's content is stored once as a blob (keyed by
its sha256, zlib-compressed when that makes it smaller); a genome is a manifest {path: blob hash}
keyed by the sha256 over its sorted (path, blob hash) pairs, so equal trees share one row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from openended.names import genome_path_problem

from .errors import ArchiveDBError, InvalidValueError

_COMPRESS_MIN = 64  # smaller blobs are never worth a zlib header


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


def store_genomes(conn: sqlite3.Connection, genomes: Mapping[str, GenomeParts]) -> None:
    """Insert genomes (by hash) and the blobs they hold that are not stored yet. The caller holds
    the transaction."""
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
            [(g.hash, g.manifest, g.total_bytes) for g in genomes.values()],
        )


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
    wanted = set(manifest.values())
    blobs = {}
    for h, content, compressed in conn.execute(
        "SELECT hash, content, compressed FROM blobs WHERE hash IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(wanted)),),
    ):
        blobs[h] = zlib.decompress(content) if compressed else bytes(content)
    missing = wanted - blobs.keys()
    if missing:
        raise ArchiveDBError(f"genome {genome_hash} references missing blobs {sorted(missing)[:3]}")
    return {path: blobs[h] for path, h in sorted(manifest.items())}
