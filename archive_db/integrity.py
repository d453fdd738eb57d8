"""Checking a campaign database end to end: SQLite's own checks, the stored genomes and the recipes.

:func:`check_integrity` reports problems instead of raising, so that one report lists them all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from dataclasses import dataclass, field

from .errors import ArchiveDBError
from .genomes import blob_contents
from .recipes import GenomeCache, Genomes, regenerator

MAX_PROBLEMS = 100  # a report lists at most this many (and counts the rest)


@dataclass(slots=True)
class IntegrityReport:
    """What :func:`check_integrity` found. ``ok`` when ``problems`` is empty."""

    problems: list[str] = field(default_factory=list)
    more: int = 0  # problems beyond MAX_PROBLEMS, counted only
    blobs: int = 0
    genomes: int = 0
    recipes: int = 0
    regenerated: int = 0  # compact genomes regenerated and matched to their hash

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more += 1


def check_integrity(conn: sqlite3.Connection, *, regenerate: bool = True) -> IntegrityReport:
    """Check ``conn``'s database: ``PRAGMA integrity_check`` and ``foreign_key_check``; every blob against
    its hash; every genome's manifest against its blobs and its hash; every agent's genome is either stored
    or a recipe; every recipe's method is one this openended regenerates, its parent has a genome and its
    hops are at least its parent's plus one; the running totals (``agent_totals``, ``elite_totals``) equal a
    scan; and (``regenerate``) every compact genome regenerates to its hash, in id order so that each parent
    is regenerated once (about 0.1 ms per maze child)."""
    report = IntegrityReport()
    for (line,) in conn.execute("PRAGMA integrity_check"):
        if line != "ok":
            report.add(f"sqlite: {line}")
    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
        report.add(f"{table} row {rowid}: references a missing {parent} row")
    _check_blobs(conn, report)
    _check_recipes(conn, report)
    _check_evaluation_runs(conn, report)
    _check_totals(conn, report)
    if regenerate:
        genomes = Genomes(conn, GenomeCache(16 << 20))
        for (agent_id,) in conn.execute("SELECT agent_id FROM recipes ORDER BY agent_id").fetchall():
            try:
                genomes.regenerate(int(agent_id))
                report.regenerated += 1
            except ArchiveDBError as exc:
                report.add(str(exc))
    return report


def _check_blobs(conn: sqlite3.Connection, report: IntegrityReport) -> None:
    present: set[str] = set()
    depth_of: dict[int, int] = {}
    for bid, h, content, compressed, size, base, depth in conn.execute(
            "SELECT id, hash, content, compressed, size, base, depth FROM blobs ORDER BY id"):
        report.blobs += 1
        present.add(h)
        depth_of[bid] = depth
        if base is None:
            try:
                data = zlib.decompress(content) if compressed else bytes(content)
            except zlib.error as exc:
                report.add(f"blob {h[:12]}: does not decompress ({exc})")
                continue
            if depth != 0 or len(data) != size or hashlib.sha256(data).hexdigest() != h:
                report.add(f"blob {h[:12]}: its content does not match its hash or size, or its depth is not 0")
        elif base >= bid or depth != depth_of.get(base, -2) + 1:
            report.add(f"blob {h[:12]}: its delta base (blob id {base}) is not an earlier blob one level shallower")
    # the deltas, decoded through their bases (each checked against its hash on the way), a chain at a time
    for (h,) in conn.execute("SELECT hash FROM blobs AS b WHERE base IS NOT NULL AND NOT EXISTS "
                             "(SELECT 1 FROM blobs AS d WHERE d.base = b.id) ORDER BY id"):
        try:
            blob_contents(conn, [h])
        except ArchiveDBError as exc:
            report.add(str(exc))
    for gh, manifest in conn.execute("SELECT hash, manifest FROM genomes"):
        report.genomes += 1
        files: dict[str, str] = json.loads(manifest)
        digest = hashlib.sha256()
        for path in sorted(files):
            digest.update(f"{path}\x00{files[path]}\n".encode())
            if files[path] not in present:
                report.add(f"genome {gh[:12]}: file {path!r} names a missing blob {files[path][:12]}")
        if digest.hexdigest() != gh:
            report.add(f"genome {gh[:12]}: its manifest does not match its hash")


def _check_recipes(conn: sqlite3.Connection, report: IntegrityReport) -> None:
    for (agent_id,) in conn.execute(
            "SELECT a.id FROM agents a WHERE a.genome_hash IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM genomes g WHERE g.hash = a.genome_hash) "
            "AND NOT EXISTS (SELECT 1 FROM recipes r WHERE r.agent_id = a.id)"):
        report.add(f"agent {agent_id}: its genome is neither stored nor a recipe")
    for mid, operator, version, made_with in conn.execute(
            "SELECT id, operator, version, made_with FROM recipe_methods"):
        if regenerator(operator, int(version)) is None:
            report.add(f"recipe method {mid} ({operator} v{version}, made with {made_with}): "
                       "this openended has no regenerator for it")
    for agent_id, parent_id, parent_hash, hops, parent_hops in conn.execute(
            "SELECT r.agent_id, a.parent_id, p.genome_hash, r.hops, COALESCE(pr.hops, 0) FROM recipes r "
            "JOIN agents a ON a.id = r.agent_id LEFT JOIN agents p ON p.id = a.parent_id "
            "LEFT JOIN recipes pr ON pr.agent_id = p.id"):
        report.recipes += 1
        if parent_id is None or parent_hash is None:
            report.add(f"agent {agent_id}: a recipe without a parent genome to regenerate from")
        elif hops < parent_hops + 1:  # more (a parent materialised later) only overstates the chain
            report.add(f"agent {agent_id}: recipe hops {hops}, but its parent {parent_id} is {parent_hops} "
                       "regenerations from a stored genome")


def _check_evaluation_runs(conn: sqlite3.Connection, report: IntegrityReport) -> None:
    """A run evaluated as many agents as it says; one shared by several, only finished ones (their fitness is
    the run's)."""
    for run_id, agents, found, finished in conn.execute(
            "SELECT r.id, r.agents, COALESCE(c.n, 0), COALESCE(c.finished, 0) FROM evaluation_runs r LEFT JOIN "
            "(SELECT m.run_id, COUNT(*) AS n, SUM(a.status IN ('archived', 'rejected', 'failed')) AS finished "
            " FROM evaluation_agents m JOIN agents a ON a.id = m.agent_id GROUP BY m.run_id) c ON c.run_id = r.id "
            "WHERE COALESCE(c.n, 0) <> r.agents OR (r.agents > 1 AND COALESCE(c.finished, 0) <> r.agents)"):
        report.add(f"evaluation run {run_id}: says {agents} agents, evaluation_agents names {found}"
                   + (f", {found - finished} of them unfinished" if agents > 1 else ""))


def _check_totals(conn: sqlite3.Connection, report: IntegrityReport) -> None:
    kept = {tuple(r[:4]): tuple(r[4:]) for r in conn.execute(
        "SELECT operator, model, is_child, status, agents, duplicates, tokens FROM agent_totals WHERE agents <> 0")}
    scanned = {tuple(r[:4]): tuple(r[4:]) for r in conn.execute(
        "SELECT operator, COALESCE(model, 'none'), parent_id IS NOT NULL, status, COUNT(*), "
        "SUM(duplicate_of IS NOT NULL), SUM(tokens_in + tokens_out) FROM agents GROUP BY 1, 2, 3, 4")}
    for key in sorted(kept.keys() | scanned.keys(), key=str):
        if kept.get(key) != scanned.get(key):
            report.add(f"agent_totals {key}: (agents, duplicates, tokens) {kept.get(key)}, a scan gives "
                       f"{scanned.get(key)}")
    elites = conn.execute("SELECT COUNT(*), (SELECT MAX(elites) FROM elite_totals) FROM elites").fetchone()
    if elites[0] != (elites[1] or 0):
        report.add(f"elite_totals: {elites[1]} elites, the elites table holds {elites[0]}")
