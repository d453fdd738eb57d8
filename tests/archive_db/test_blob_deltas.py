"""Code blobs kept as zstd deltas of the parent's file (migration 0010, archive_db/genomes.py): every genome
reads back to its exact bytes, in the same connection and a fresh one; chains stay bounded; a damaged base is
an error naming a blob, never wrong bytes."""

from __future__ import annotations

import random
import sqlite3
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import ArchiveDB, ArchiveDBError, Outcome, Proposal
from archive_db.genomes import MAX_DELTA_DEPTH

SCHEMA = {"names": ["x", "y"], "bounds": [[0, 1], [0, 1]], "bins": [10, 10]}
PROGRAM = b"".join(b"def rule_%d(bins, item):\n    return -(bins - item) * %d.5 + %d\n\n" % (i, i, i * i)
                   for i in range(40))  # about 2 KB of code, compressible but not trivially


def new_db(path) -> ArchiveDB:
    db = ArchiveDB(path)
    db.create_run(name="t", task="toy", seed=1, config={}, descriptor_schema=SCHEMA)
    return db


def add_child(db: ArchiveDB, agent_id: int, parent: int | None, files: dict[str, bytes]) -> None:
    """Propose an agent and store its files as a code campaign does (mutated, then archived)."""
    db.propose([Proposal(id=agent_id, parent_id=parent, operator="llm_diff", seed=agent_id)])
    db.record([Outcome(id=agent_id, status="mutated", files=files)])
    db.record([Outcome(id=agent_id, status="archived", fitness=float(agent_id), descriptors=[0.5, 0.5])])


def edit(content: bytes, rng: random.Random) -> bytes:
    """A line of ``content`` replaced, inserted or removed."""
    lines = content.split(b"\n")
    i = rng.randrange(len(lines))
    kind = rng.choice(("replace", "insert", "remove"))
    new = b"    return %d  # edited" % rng.randrange(10**6)
    if kind == "replace":
        lines[i] = new
    elif kind == "insert":
        lines.insert(i, new)
    elif len(lines) > 1:
        del lines[i]
    return b"\n".join(lines)


def store_chain(db: ArchiveDB, n: int, seed: int) -> list[bytes]:
    """Agents 0..n-1, each the child of the one before, each file an edit of its parent's; their files."""
    rng = random.Random(seed)
    contents = [PROGRAM]
    add_child(db, 0, None, {"main.py": contents[0]})
    for i in range(1, n):
        contents.append(edit(contents[-1], rng))
        add_child(db, i, i - 1, {"main.py": contents[i]})
    return contents


def blob_rows(db: ArchiveDB) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in db.conn.execute("SELECT hash, id, base, depth, length(content), size FROM blobs")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), branch=st.floats(0.0, 1.0))
def test_every_genome_reads_back_exactly_through_its_deltas(tmp_path_factory, seed, n, branch):
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("deltas") / "c.db"
    db = new_db(path)
    files = {0: {"main.py": PROGRAM, "util.py": b"X = 1\n"}}
    add_child(db, 0, None, files[0])
    for i in range(1, n):
        parent = rng.randrange(i) if rng.random() < branch else i - 1  # chains and a bushy tree
        child = dict(files[parent])
        child["main.py"] = edit(child["main.py"], rng)
        if rng.random() < 0.2:
            child["new.py"] = edit(PROGRAM, rng)  # a path the parent lacks: stored whole
        files[i] = child
        add_child(db, i, parent, child)
    for i, want in files.items():
        assert db.agent_files(i) == want
    rows = blob_rows(db)
    by_id = {r[0]: r for r in rows.values()}
    for _h, (bid, base, depth, _stored, _size) in rows.items():
        assert 0 <= depth <= MAX_DELTA_DEPTH
        if base is None:
            assert depth == 0
        else:
            assert base < bid and depth == by_id[base][2] + 1
    assert db.check_integrity().ok
    db.close()
    fresh = ArchiveDB(path, readonly=True)  # another connection, nothing cached
    for i, want in files.items():
        assert fresh.agent_files(i) == want
    fresh.close()


def test_a_one_line_edit_is_stored_in_tens_of_bytes_and_long_chains_start_afresh(tmp_path):
    db = new_db(tmp_path / "c.db")
    rng = random.Random(0)
    content = PROGRAM
    add_child(db, 0, None, {"main.py": content})
    for i in range(1, 3 * MAX_DELTA_DEPTH):
        content = edit(content, rng)
        add_child(db, i, i - 1, {"main.py": content})
    rows = sorted(blob_rows(db).values())
    whole = len(zlib.compress(PROGRAM, 6))
    deltas = [r for r in rows if r[1] is not None]
    assert len(deltas) >= 2 * MAX_DELTA_DEPTH
    assert max(r[3] for r in deltas) < 100 < whole  # tens of bytes, against zlib's ~hundreds
    assert max(r[2] for r in rows) == MAX_DELTA_DEPTH
    # past the bound a file is stored whole (zlib) and starts a new chain
    restarts = [r for r in rows if r[1] is None]
    assert len(restarts) >= 3 and all(r[3] >= whole // 2 for r in restarts)


@pytest.mark.parametrize("damage", ["base bytes", "missing base", "delta bytes"])
def test_a_damaged_chain_is_an_error_naming_a_blob(tmp_path, damage):
    db = new_db(tmp_path / "c.db")
    contents = store_chain(db, 4, seed=1)
    rows = sorted(blob_rows(db).values())
    root_id, first_delta_id = rows[0][0], rows[1][0]
    assert rows[1][1] == root_id
    with pytest.raises(sqlite3.IntegrityError):  # the schema refuses to delete a base
        db.conn.execute("DELETE FROM blobs WHERE id = ?", (root_id,))
    db.conn.execute("PRAGMA foreign_keys = OFF")  # so: damage from outside
    with db.transaction():
        if damage == "base bytes":  # same size: only the hash can tell
            db.conn.execute("UPDATE blobs SET content = ? WHERE id = ?",
                            (zlib.compress(contents[0].replace(b"rule_1", b"rule_X")), root_id))
        elif damage == "missing base":
            db.conn.execute("DELETE FROM blobs WHERE id = ?", (root_id,))
        else:
            db.conn.execute("UPDATE blobs SET content = zeroblob(length(content)) WHERE id = ?", (first_delta_id,))
    db.close()
    db = ArchiveDB(tmp_path / "c.db", readonly=True)  # nothing cached from before the damage
    with pytest.raises(ArchiveDBError, match=r"blob [0-9a-f]{12}"):
        db.agent_files(3)
    report = db.check_integrity(regenerate=False)
    assert not report.ok and any("blob" in p for p in report.problems)


def test_a_wrong_depth_is_reported_and_deletes_stay_cheap(tmp_path):
    db = new_db(tmp_path / "c.db")
    contents = store_chain(db, 4, seed=2)
    delta = db.conn.execute("SELECT id FROM blobs WHERE base IS NOT NULL ORDER BY id LIMIT 1").fetchone()[0]
    # the base index: a delete asks SQLite which deltas name the row, through an index, not a scan
    plan = " ".join(r[-1] for r in db.conn.execute("EXPLAIN QUERY PLAN SELECT 1 FROM blobs WHERE base = ?", (delta,)))
    assert "idx_blobs_base" in plan
    assert db.check_integrity(regenerate=False).ok
    with db.transaction():
        db.conn.execute("UPDATE blobs SET depth = depth + 5 WHERE id = ?", (delta,))
    report = db.check_integrity(regenerate=False)
    assert any("one level shallower" in p for p in report.problems)
    assert db.agent_files(3) == {"main.py": contents[3]}  # the bytes themselves are still right
