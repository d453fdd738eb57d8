"""Tests for archive_db (the SQLite lineage store)."""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archive_db
from archive_db import (
    SCHEMA_VERSION,
    ArchiveDB,
    ArchiveDBError,
    InvalidTransitionError,
    InvalidValueError,
    NewerSchemaError,
    NotADatabaseError,
    Outcome,
    Proposal,
    RunExistsError,
    UnknownAgentError,
    migrations,
    split_sql,
)
from openended.genome_diff import genome_diff

PKG = Path(archive_db.__file__).parent
SCHEMA = {"names": ["x", "y"], "bounds": [[0, 1], [0, 1]], "bins": [10, 10]}


def new_db(tmp_path, name="c.db") -> ArchiveDB:
    db = ArchiveDB(tmp_path / name)
    db.create_run(name="t", task="toy", seed=1, config={"a": 1}, descriptor_schema=SCHEMA)
    return db


def prop(i, parent, operator="d", seed=None, **kw) -> Proposal:
    return Proposal(id=i, parent_id=parent, operator=operator, seed=i if seed is None else seed, **kw)


def archived(i, fitness=1.0, desc=(0.5, 0.5), cell=None, files=None, **kw):
    return Outcome(id=i, status="archived", files=files or {"g.txt": f"agent {i}\n".encode()},
                   fitness=fitness, descriptors=list(desc), cell=cell, **kw)


def snapshot(db: ArchiveDB):
    """Everything in the database, for before/after comparisons."""
    out = {}
    for (t,) in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"):
        out[t] = db.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
    return out


# ---------------------------------------------------------------------------------------------
# opening, pragmas, run header


def test_open_creates_wal_and_pragmas(tmp_path):
    db = new_db(tmp_path)
    c = db.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.schema_version == SCHEMA_VERSION
    assert db.db.conn is c  # the sqlite_utils.Database wraps the same connection
    assert "agents" in db.db.table_names()
    db.close()


def test_run_header(tmp_path):
    db = new_db(tmp_path)
    run = db.get_run()
    assert run["name"] == "t" and run["config"] == {"a": 1} and run["descriptor_schema"] == SCHEMA
    assert run["status"] == "created" and run["state"] == {} and run["schema_version"] == SCHEMA_VERSION
    with pytest.raises(RunExistsError):
        db.create_run(name="u", task="toy", seed=2, config={}, descriptor_schema=SCHEMA)
    db.update_run(status="running", state={"rng": [1, 2, 3], "n": 5})
    run = db.get_run()
    assert run["status"] == "running" and run["state"] == {"rng": [1, 2, 3], "n": 5}
    db.update_run(status="stopped")
    assert db.get_run()["state"] == {"rng": [1, 2, 3], "n": 5}
    with pytest.raises(InvalidValueError):
        db.update_run(status="bogus")
    db.close()
    with ArchiveDB(tmp_path / "c.db") as again:
        assert again.get_run()["status"] == "stopped"


def test_no_run_yet(tmp_path):
    with ArchiveDB(tmp_path / "x.db") as db:
        assert db.get_run() is None
        assert db.next_agent_id() == 0
        assert db.best_agent() is None
        assert db.counts() == {s: 0 for s in archive_db.STATUSES}


# ---------------------------------------------------------------------------------------------
# lifecycle


def test_lifecycle_step_by_step(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=11)])
    row = db.agent(0)
    assert row["status"] == "proposed" and row["depth"] == 0 and row["seed"] == 11
    db.record([Outcome(id=0, status="mutated", files={"a.py": b"x = 1\n"}, tokens_in=10, cost=0.5, model="m")])
    assert db.agent(0)["status"] == "mutated" and db.agent(0)["mutated_at"] is not None
    db.record([Outcome(id=0, status="evaluated", fitness=2.0, descriptors=[0.1, 0.2], metrics={"k": 1},
                       feedback="ok", eval_seconds=0.3, tokens_in=5)])
    db.record([Outcome(id=0, status="archived", novelty=0.7, cell=3, archive_event="new_cell")])
    row = db.agent(0)
    assert row["status"] == "archived" and row["fitness"] == 2.0 and row["descriptors"] == [0.1, 0.2]
    assert row["metrics"] == {"k": 1} and row["novelty"] == 0.7 and row["cell"] == 3
    assert row["tokens_in"] == 15 and row["cost"] == 0.5 and row["model"] == "m"
    assert row["finish_seq"] == 1 and row["finished_at"] >= row["evaluated_at"] >= row["mutated_at"]
    assert db.agent_files(0) == {"a.py": b"x = 1\n"}

    # children, depth, forward jumps
    db.propose([Proposal(id=1, parent_id=0, operator="diff", seed=1),
                Proposal(id=2, parent_id=1, operator="diff", seed=2),
                Proposal(id=3, parent_id=0, parent2_id=1, operator="crossover", seed=3)])
    assert [db.agent(i)["depth"] for i in (1, 2, 3)] == [1, 2, 1]
    db.record([archived(1, fitness=3.0), Outcome(id=2, status="failed", fail_stage="timeout", fail_reason="10 s"),
               Outcome(id=3, status="rejected", genome_hash=db.agent(0)["genome_hash"], fitness=0.1,
                       descriptors=[0, 0], duplicate_of=0)])
    assert [db.agent(i)["finish_seq"] for i in (1, 2, 3)] == [2, 3, 4]
    assert db.agent(3)["duplicate_of"] == 0
    assert db.counts() == {"proposed": 0, "mutated": 0, "evaluated": 0, "archived": 2, "rejected": 1, "failed": 1}
    assert db.next_agent_id() == 4
    assert [r["id"] for r in db.agents_by_status("archived")] == [0, 1]
    assert [r["id"] for r in db.agents_by_status("archived", limit=1)] == [0]
    db.close()


def test_outcome_updates_in_one_batch_apply_in_order(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    db.record([Outcome(id=0, status="mutated", files={"a": b"1"}),
               Outcome(id=0, status="evaluated", fitness=1.0, descriptors=[0, 0]),
               Outcome(id=0, status="rejected")])
    assert db.agent(0)["status"] == "rejected"


ILLEGAL = [
    ("mutated", "mutated"), ("evaluated", "mutated"), ("evaluated", "evaluated"),
    ("archived", "failed"), ("rejected", "archived"), ("failed", "mutated"), ("archived", "rejected"),
]


def _bring_to(db, i, status):
    db.propose([Proposal(id=i, parent_id=None, operator="seed", seed=i)])
    files = {"a": str(i).encode()}
    if status == "mutated":
        db.record([Outcome(id=i, status="mutated", files=files)])
    elif status == "evaluated":
        db.record([Outcome(id=i, status="evaluated", files=files, fitness=1.0, descriptors=[0, 0])])
    elif status in ("archived", "rejected"):
        db.record([Outcome(id=i, status=status, files=files, fitness=1.0, descriptors=[0, 0])])
    elif status == "failed":
        db.record([Outcome(id=i, status="failed", fail_stage="mutation", fail_reason="boom")])


@pytest.mark.parametrize("frm,to", ILLEGAL)
def test_illegal_transitions_refused_by_python(tmp_path, frm, to):
    db = new_db(tmp_path)
    _bring_to(db, 0, frm)
    before = snapshot(db)
    out = Outcome(id=0, status=to, files={"a": b"z"}, fitness=2.0, descriptors=[1, 1],
                  fail_stage="sandbox" if to == "failed" else None, fail_reason="x" if to == "failed" else None)
    with pytest.raises(InvalidTransitionError) as e:
        db.record([out])
    assert "agent 0" in str(e.value) and frm in str(e.value) and to in str(e.value)
    assert snapshot(db) == before


def test_missing_step_data_is_refused(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    with pytest.raises(InvalidTransitionError):  # no genome
        db.record([Outcome(id=0, status="mutated")])
    with pytest.raises(InvalidTransitionError):  # genome but no fitness
        db.record([Outcome(id=0, status="archived", files={"a": b"1"})])
    with pytest.raises(InvalidValueError):  # failed without a stage
        db.record([Outcome(id=0, status="failed", fail_reason="x")])
    with pytest.raises(InvalidValueError):  # failed without a reason
        db.record([Outcome(id=0, status="failed", fail_stage="sandbox")])
    with pytest.raises(InvalidTransitionError):
        db.record([Outcome(id=0, status="proposed")])
    with pytest.raises(InvalidValueError):
        db.record([Outcome(id=0, status="bogus")])
    with pytest.raises(InvalidValueError):
        db.record([Outcome(id=0, status="archived", files={"a": b"1"}, fitness=1, descriptors=[0, 0],
                           archive_event="whatever")])
    with pytest.raises(InvalidValueError):
        db.record([Outcome(id=0, status="mutated", genome_hash="0" * 64)])  # not stored
    assert db.agent(0)["status"] == "proposed"


def _raw(db, sql, *params):
    db.conn.execute(sql, params)


# The trigger refuses backward moves and any change of a terminal row; re-writing a non-terminal
# row at the same status (a field fix-up in raw SQL) is left to the Python layer to refuse.
TRIGGER_ILLEGAL = [t for t in ILLEGAL if t[0] != t[1]] + [("mutated", "proposed"), ("evaluated", "proposed")]


@pytest.mark.parametrize("frm,to", TRIGGER_ILLEGAL)
def test_illegal_transitions_refused_by_database_trigger(tmp_path, frm, to):
    db = new_db(tmp_path)
    _bring_to(db, 0, frm)
    gh = db.put_genome({"z": b"z"})
    before = snapshot(db)
    with pytest.raises(sqlite3.IntegrityError, match="illegal status transition"):
        _raw(db, "UPDATE agents SET status = ?, genome_hash = ?, fitness = 1, descriptors = '[0,0]', "
                 "fail_stage = 'sandbox', fail_reason = 'x' WHERE id = 0", to, gh)
    assert snapshot(db) == before


def test_database_checks_refuse_rows_without_data(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    for sql in [
        "UPDATE agents SET status = 'mutated' WHERE id = 0",                     # no genome
        "UPDATE agents SET status = 'failed' WHERE id = 0",                      # no stage, reason
        "UPDATE agents SET status = 'failed', fail_stage = 'nope', fail_reason = 'x' WHERE id = 0",
        "UPDATE agents SET status = 'weird' WHERE id = 0",
        "INSERT INTO agents(id, operator, seed, created_at, status) VALUES (9, 'x', 0, 0, 'archived')",
        "INSERT INTO agents(id, parent_id, operator, seed, created_at) VALUES (9, 777, 'x', 0, 0)",  # FK
    ]:
        with pytest.raises(sqlite3.IntegrityError):
            db.conn.execute(sql)
    # terminal rows are frozen even for non-status columns
    db.record([Outcome(id=0, status="failed", fail_stage="sandbox", fail_reason="oom")])
    with pytest.raises(sqlite3.IntegrityError, match="illegal status transition"):
        db.conn.execute("UPDATE agents SET feedback = 'late' WHERE id = 0")
    # legal raw moves pass the trigger
    db.conn.execute("INSERT INTO agents(id, operator, seed, created_at) VALUES (5, 'x', 0, 0)")
    db.conn.execute("UPDATE agents SET status = 'failed', fail_stage = 'sandbox', fail_reason = 'x' WHERE id = 5")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(["mutated", "evaluated", "archived", "rejected", "failed"]), max_size=6))
def test_lifecycle_state_machine_property(tmp_path_factory, steps):
    """Any sequence of record() calls: the row only moves forward, refused steps change nothing,
    and Python and the database agree."""
    rank = {"proposed": 0, "mutated": 1, "evaluated": 2, "archived": 3, "rejected": 3}
    db = new_db(tmp_path_factory.mktemp("sm"))
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    status = "proposed"
    for to in steps:
        out = Outcome(id=0, status=to, files={"a": b"1"}, fitness=1.0, descriptors=[0, 0],
                      fail_stage="sandbox" if to == "failed" else None, fail_reason="x" if to == "failed" else None)
        legal = status not in ("archived", "rejected", "failed") and (to == "failed" or rank[to] > rank[status])
        if legal:
            db.record([out])
            status = to
        else:
            with pytest.raises(InvalidTransitionError):
                db.record([out])
        assert db.agent(0)["status"] == status
    db.close()


# ---------------------------------------------------------------------------------------------
# validation: bad input writes nothing


@pytest.mark.parametrize(
    "bad,err,words",
    [
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[0.1]),
         InvalidValueError, ["agent 1", "length 1", "expected 2"]),
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=math.nan, descriptors=[0, 0]),
         InvalidValueError, ["agent 1", "fitness"]),
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=math.inf, descriptors=[0, 0]),
         InvalidValueError, ["agent 1", "fitness"]),
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[0, math.inf]),
         InvalidValueError, ["agent 1", "descriptors"]),
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[math.nan, 0]),
         InvalidValueError, ["agent 1", "descriptors"]),
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[0, 0], novelty=-math.inf),
         InvalidValueError, ["agent 1", "novelty"]),
        (Outcome(id=99, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[0, 0]),
         UnknownAgentError, ["99"]),
        (Outcome(id=1, status="archived", files={"a": "text not bytes"}, fitness=1.0, descriptors=[0, 0]),
         InvalidValueError, ["agent 1"]),
        (Outcome(id=1, status="archived", files={"a": b"2"}, fitness=1.0, descriptors=[0, 0], duplicate_of=42),
         UnknownAgentError, ["42"]),
    ],
)
def test_bad_batch_writes_nothing(tmp_path, bad, err, words):
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0),
                Proposal(id=1, parent_id=0, operator="diff", seed=1)])
    before = snapshot(db)
    good = archived(0, files={"fresh.txt": b"a genome that would be new\n"})
    with pytest.raises(err) as e:
        db.record([good, bad])  # the good row comes first and must not be written either
    for w in words:
        assert w in str(e.value)
    assert snapshot(db) == before


def test_propose_refusals(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    before = snapshot(db)
    with pytest.raises(InvalidValueError, match="0"):
        db.propose([prop(1, 0), prop(0, None, seed=1)])
    with pytest.raises(InvalidValueError):
        db.propose([prop(1, 0), prop(1, 0)])
    with pytest.raises(UnknownAgentError, match="7"):
        db.propose([prop(1, 0), prop(9, 7, seed=1)])
    with pytest.raises(UnknownAgentError, match="8"):
        db.propose([Proposal(id=10, parent_id=0, parent2_id=8, operator="x", seed=1)])
    with pytest.raises(InvalidValueError, match="smaller id"):
        db.propose([prop(1, 0), prop(2, 3, seed=1),
                    Proposal(id=3, parent_id=0, operator="d", seed=1)])
    assert snapshot(db) == before
    with pytest.raises(UnknownAgentError, match="123"):
        db.agent(123)


def test_nested_transaction_joins_outer_and_rolls_back(tmp_path):
    db = new_db(tmp_path)
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
            db.record([archived(0)])
            raise RuntimeError("crash before commit")
    assert db.next_agent_id() == 0
    with db.transaction():
        db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
        with pytest.raises(UnknownAgentError):
            db.record([archived(0), archived(5)])
        db.record([archived(0)])  # the outer transaction goes on
    assert db.agent(0)["status"] == "archived"


# ---------------------------------------------------------------------------------------------
# genomes and diffs


def test_surrogate_path_refused(tmp_path):
    with ArchiveDB(tmp_path / "g.db") as db, pytest.raises(InvalidValueError):
        db.put_genome({"\ud800": b"x"})


def test_identical_genomes_stored_once(tmp_path):
    db = new_db(tmp_path)
    files = {"main.py": b"print('hi')\n" * 20, "lib/util.py": b"X = 1\n"}
    h1 = db.put_genome(files)
    h2 = db.put_genome(dict(reversed(list(files.items()))))
    assert h1 == h2
    db.propose([Proposal(id=i, parent_id=None, operator="seed", seed=i) for i in range(5)])
    db.record([archived(i, files=files) for i in range(5)])
    assert db.conn.execute("SELECT COUNT(*) FROM genomes").fetchone()[0] == 1
    assert db.conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 2
    # a second genome sharing one file adds one genome and one blob
    db.put_genome({"main.py": files["main.py"], "lib/util.py": b"X = 2\n"})
    assert db.conn.execute("SELECT COUNT(*) FROM genomes").fetchone()[0] == 2
    assert db.conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 3
    assert db.get_genome(h1) == files
    # compressible content is compressed, incompressible is not
    rows = dict(db.conn.execute("SELECT size, compressed FROM blobs").fetchall())
    assert rows[len(files["main.py"])] == 1 and rows[6] == 0
    rnd = os.urandom(2000)
    h = db.put_genome({"r.bin": rnd})
    assert db.get_genome(h) == {"r.bin": rnd}


# Genome paths (openended.names.genome_path_problem): segments without NUL, newlines or backslashes, joined by "/".
SEGMENTS = st.text(st.characters(blacklist_characters="\x00\n\r\\/", blacklist_categories=("Cs",)), min_size=1,
                   max_size=6).filter(lambda s: s not in (".", ".."))
PATHS = st.lists(SEGMENTS, min_size=1, max_size=3).map("/".join)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(PATHS, st.binary(max_size=300), max_size=5))
def test_genome_roundtrip_property(tmp_path_factory, files):
    db = ArchiveDB(tmp_path_factory.mktemp("g") / "g.db")
    h = db.put_genome(files)
    assert db.put_genome(dict(files)) == h
    assert db.get_genome(h) == files
    db.close()


def test_diff_text_npy_binary(tmp_path):
    """The store keeps the files; openended.genome_diff renders the diff of two agents' files."""
    db = new_db(tmp_path)
    a_files = {"solve.py": b"def f(x):\n    return x + 1\n", "w.npy": _npy([1.0, 2.0, 3.0]), "blob.bin": b"\x00\x01"}
    b_files = {"solve.py": b"def f(x):\n    return x * 2\n", "w.npy": _npy([1.0, 2.5, 3.0]), "blob.bin": b"\x00\x02",
               "new.txt": b"hello\n"}
    db.propose([prop(0, None, "seed"), prop(1, 0)])
    db.record([archived(0, files=a_files), archived(1, files=b_files)])
    assert db.agent_files(0) == a_files and db.agent_files(1) == b_files
    d = genome_diff(db.agent_files(0), db.agent_files(1), "agent 0", "agent 1")
    assert "-    return x + 1" in d and "+    return x * 2" in d
    assert "--- a/solve.py\t(agent 0)" in d and "+++ b/solve.py\t(agent 1)" in d
    assert "-2.0" in d and "+2.5" in d and "# shape (3,) dtype float64" in d
    assert "Binary files a/blob.bin and b/blob.bin differ" in d
    assert "+hello" in d and "/dev/null" in d
    root = genome_diff(None, db.agent_files(0), "empty", "agent 0")  # a root against the empty tree
    assert "+def f(x):" in root and "--- /dev/null" in root
    assert genome_diff(db.agent_files(0), db.agent_files(0), "agent 0", "agent 0") == ""
    assert genome_diff({"t": b"a"}, {"t": b"b"}, "x", "y").endswith("+b\n\\ No newline at end of file\n")


def _npy(values):
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# lineage queries


def _chain(db, n):
    gh = db.put_genome({"g": b"x"})
    with db.transaction():
        for s in range(0, n, 1000):
            ids = range(s, min(n, s + 1000))
            db.propose(Proposal(id=i, parent_id=i - 1 if i else None, operator="op", seed=i) for i in ids)
            db.record(Outcome(id=i, status="archived", genome_hash=gh, fitness=float(i), descriptors=[0, 0], cell=i % 7)
                      for i in ids)


def test_deep_chain_ancestors_descendants(tmp_path):
    db = new_db(tmp_path)
    n = 10_000
    _chain(db, n)
    anc = db.ancestors(n - 1)
    assert [r.id for r in anc] == list(range(n))
    assert anc[-1].depth == n - 1
    desc = db.descendants(0)
    assert [r["id"] for r in desc] == list(range(1, n))
    assert db.descendants(n - 1) == []
    assert db.ancestors(0)[0].id == 0
    sql = (PKG / "queries" / "ancestors.sql").read_text()
    assert db.best_agent()["id"] == n - 1
    assert len(db.best_lineage()) == n
    # one primary-key lookup per ancestor, never a scan (its speed is bench/store_db.py's, not a test's)
    plan = " ".join(r[3] for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql, {"agent_id": 1}))
    assert "INTEGER PRIMARY KEY" in plan and "SCAN agents" not in plan
    # ArchiveDB.ancestors walks it 16 generations a row, unsorted (the walk's own order, reversed in
    # Python): primary-key lookups only, no sort of the chain
    from archive_db.reads import _ancestors_wide

    plan = " ".join(r[3] for r in db.conn.execute("EXPLAIN QUERY PLAN " + _ancestors_wide(), {"agent_id": 1}))
    assert "SCAN agents" not in plan and "TEMP B-TREE FOR ORDER BY" not in plan


def test_ancestors_are_typed_tuples_of_the_named_query(tmp_path):
    """ancestors() returns Ancestor tuples: the named query's columns, in order, with the same values
    (a failed agent in the middle, a crossover's second parent, an unarchived leaf)."""
    db = new_db(tmp_path)
    db.propose([prop(0, None, "seed"), prop(1, 0), prop(2, 1, parent2_id=0), prop(3, 2)])
    db.record([archived(0, 1.0, novelty=0.2, cell=3, archive_event="new_cell"),
               Outcome(id=1, status="failed", fail_stage="evaluation", fail_reason="boom"),
               archived(2, 2.5, novelty=None, cell=4, archive_event="improved")])
    steps = db.ancestors(3)
    assert all(type(s) is archive_db.Ancestor for s in steps)
    assert [s._asdict() for s in steps] == db.named_query("ancestors", agent_id=3)
    assert [s.id for s in steps] == [0, 1, 2, 3]
    assert (steps[1].status, steps[1].fitness) == ("failed", None)
    assert (steps[2].parent2_id, steps[2].fitness, steps[2].archive_event) == (0, 2.5, "improved")
    assert (steps[3].status, steps[3].depth, steps[3].cell) == ("proposed", 3, None)
    with pytest.raises(UnknownAgentError):
        db.ancestors(99)
    with pytest.raises(InvalidValueError):
        db.ancestors({"not": "an id"})  # type: ignore[arg-type]
    # a query whose columns drift from the tuple's fields is an error, not silently misnamed values
    from archive_db.sql import typed_rows

    with pytest.raises(ArchiveDBError, match="do not match Ancestor"):
        typed_rows(db.conn.execute("SELECT id, depth, parent_id FROM agents"), archive_db.Ancestor)
    # several to a row: the fields repeated, in order, exactly that many times
    one = ", ".join(archive_db.Ancestor._fields)
    two = typed_rows(db.conn.execute(f"SELECT {one}, {one} FROM agents WHERE id = 2"), archive_db.Ancestor, per_row=2)
    assert two == [db.ancestors(2)[-1]] * 2
    with pytest.raises(ArchiveDBError, match="do not match Ancestor"):
        typed_rows(db.conn.execute(f"SELECT {one}, {one} FROM agents"), archive_db.Ancestor, per_row=3)
    with pytest.raises(ArchiveDBError, match="do not match Ancestor"):
        typed_rows(db.conn.execute(f"SELECT {one}, id, {one} FROM agents"), archive_db.Ancestor, per_row=2)
    db.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parents=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=80),
       archived_every=st.integers(min_value=1, max_value=5), second=st.integers(min_value=0, max_value=7))
def test_ancestors_equal_the_named_query_for_any_tree(tmp_path_factory, parents, archived_every, second):
    """For any tree (agent i > 0 has a random earlier parent, some a crossover's second parent, some
    archived with a fitness and an archive event, some failed, some left proposed), ancestors(x) is the
    named query's rows for every x, as Ancestor tuples: lineages of every length, across the 16
    generations of each of the walk's rows; unset, the fittest agent's lineage."""
    db = new_db(tmp_path_factory.mktemp("anc"))
    n = len(parents)
    # a long spine too, so lineages cross several of the walk's 16-generation rows
    par = [None] + [i - 1 if p % 3 else p % i for i, p in enumerate(parents[1:], start=1)]
    db.propose(prop(i, par[i], operator=("op", "x", "seed")[i % 3],
                    parent2_id=(i - 1 - (p % i)) if i and second and p % second == 0 else None)
               for i, p in enumerate(parents))
    outs = []
    for i, p in enumerate(parents):
        if i % archived_every == 0:
            outs.append(archived(i, fitness=p / 7.0, novelty=None if p % 2 else p / 3.0, cell=p % 50,
                                 archive_event=(None, "new_cell", "improved")[p % 3]))
        elif p % 5 == 1:
            outs.append(Outcome(id=i, status="failed", fail_stage="evaluation", fail_reason="boom"))
    db.record(outs)
    for x in range(n):
        steps = db.ancestors(x)
        assert all(type(s) is archive_db.Ancestor for s in steps)
        assert [s._asdict() for s in steps] == db.named_query("ancestors", agent_id=x)
        assert steps[-1].id == x and steps[0].parent_id is None and len(steps) == steps[-1].depth + 1
        assert all(b.parent_id == a.id for a, b in zip(steps, steps[1:], strict=False))
    assert [s._asdict() for s in db.ancestors(None)] == db.named_query("ancestors", agent_id="")  # type: ignore[arg-type]
    db.close()


def test_ancestors_broken_chain_is_an_error(tmp_path):
    """A parent missing from the store (written with foreign keys off) ends the walk early: an error,
    never a lineage that stops at a non-root."""
    db = new_db(tmp_path)
    db.propose([prop(0, None, "seed")] + [prop(i, i - 1) for i in range(1, 40)])
    assert [s.id for s in db.ancestors(39)] == list(range(40))
    raw = sqlite3.connect(db.path)
    raw.execute("PRAGMA foreign_keys=OFF")
    raw.execute("UPDATE agents SET parent_id = 1000 WHERE id = 20")
    raw.commit()
    raw.close()
    with pytest.raises(ArchiveDBError, match="out of order"):
        db.ancestors(39)
    assert [s.id for s in db.ancestors(19)] == list(range(20))
    db.close()


def test_wide_tree(tmp_path):
    db = new_db(tmp_path)
    props = [Proposal(id=0, parent_id=None, operator="seed", seed=0)]
    nid = 1
    kids = []
    for _ in range(200):
        props.append(Proposal(id=nid, parent_id=0, operator="op", seed=nid))
        kids.append(nid)
        nid += 1
    grand = {}
    for k in kids:
        for _ in range(5):
            props.append(Proposal(id=nid, parent_id=k, operator="op", seed=nid))
            grand[nid] = k
            nid += 1
    db.propose(props)
    desc = db.descendants(0)
    assert len(desc) == 200 + 1000
    assert [r["id"] for r in desc[:200]] == kids and all(r["depth"] == 2 for r in desc[200:])
    assert [r["id"] for r in desc[200:]] == sorted(grand)
    assert [r["id"] for r in db.descendants(kids[3])] == [g for g, p in grand.items() if p == kids[3]]
    g = max(grand)
    assert [r.id for r in db.ancestors(g)] == [0, grand[g], g]
    cc = db.children_counts()
    assert cc[0] == 200 and all(cc[k] == 5 for k in kids) and len(cc) == 201


def test_best_lineage_and_stepping_stones(tmp_path):
    """Hand-built tree (fitness, cell):
        0 (1.0, c0) ── 1 (0.5, c1) ── 3 (0.8, c2 rejected) ── 5 (3.0, c0)   <- best
                    └─ 2 (2.0, c0) ── 4 failed
        cell 0 is the best's cell: 0 held it (not a stepping stone); 1 and 3 did not -> stones.
    """
    db = new_db(tmp_path)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0),
                Proposal(id=1, parent_id=0, operator="d", seed=1),
                Proposal(id=2, parent_id=0, operator="d", seed=2),
                Proposal(id=3, parent_id=1, operator="d", seed=3),
                Proposal(id=4, parent_id=2, operator="d", seed=4),
                Proposal(id=5, parent_id=3, operator="d", seed=5)])
    db.record([archived(0, 1.0, cell=0), archived(1, 0.5, cell=1), archived(2, 2.0, cell=0),
               Outcome(id=3, status="rejected", files={"g": b"3"}, fitness=0.8, descriptors=[0, 0], cell=2),
               Outcome(id=4, status="failed", fail_stage="evaluation", fail_reason="crash"),
               archived(5, 3.0, cell=0)])
    assert db.best_agent()["id"] == 5
    assert [r["id"] for r in db.best_lineage()] == [0, 1, 3, 5]
    assert [r["id"] for r in db.stepping_stones()] == [1, 3]
    assert [r["id"] for r in db.top_k(3)] == [5, 2, 0]
    with pytest.raises(InvalidValueError):
        db.top_k(3, by="cost")


def test_best_agent_ties_lowest_id_and_novelty(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=i, parent_id=None, operator="s", seed=i) for i in range(4)])
    db.record([archived(0, 1.0, novelty=0.1), archived(1, 2.0, novelty=0.3), archived(2, 2.0, novelty=0.2),
               Outcome(id=3, status="mutated", files={"g": b"m"})])
    assert db.best_agent()["id"] == 1
    assert [r["id"] for r in db.top_k(2, by="novelty")] == [1, 2]


def test_elites_and_stats(tmp_path):
    db = new_db(tmp_path)
    db.propose([Proposal(id=i, parent_id=None, operator="s", seed=i) for i in range(3)])
    db.record([archived(0, 1.0, desc=(0.1, 0.2), novelty=0.5), archived(1, 2.0), archived(2, 3.0)])
    db.set_elites({4: 0, 2: 1})
    db.set_elites({2: 2})
    assert db.elites() == [
        {"cell": 2, "agent_id": 2, "fitness": 3.0, "descriptors": [0.5, 0.5], "novelty": None},
        {"cell": 4, "agent_id": 0, "fitness": 1.0, "descriptors": [0.1, 0.2], "novelty": 0.5},
    ]
    db.remove_elites([4])
    assert [e["cell"] for e in db.elites()] == [2]
    with pytest.raises(UnknownAgentError):
        db.set_elites({9: 77})
    db.record_stats(children_done=3, archive_size=2, coverage=0.02, qd_score=5.0, best_fitness=3.0, foo="bar")
    db.record_stats(children_done=4, extra={"x": 1})
    hist = db.stats_history()
    assert [h["children_done"] for h in hist] == [3, 4]
    assert hist[0]["extra"] == {"foo": "bar"} and hist[1]["extra"] == {"x": 1}
    db.add_evaluation(0, stage="main", seconds=0.5, exit_status=0, fitness=1.0, result={"fitness": 1.0},
                      stdout_tail="ok")
    assert db.evaluations(0)[0]["result"] == {"fitness": 1.0}
    with pytest.raises(UnknownAgentError):
        db.add_evaluation(50, stage="main", seconds=0.1)


# ---------------------------------------------------------------------------------------------
# named queries


def test_named_queries_run_from_the_sql_files(tmp_path):
    db = new_db(tmp_path)
    db.propose([prop(0, None, "seed"), prop(1, 0),
                Proposal(id=2, parent_id=1, operator="d", seed=2)])
    db.record([archived(0, 1.0, novelty=0.2), archived(1, 2.0, novelty=0.1)])
    db.close()
    names = archive_db.query_names()
    assert set(names) >= {"ancestors", "descendants", "children_counts", "best_lineage", "stepping_stones",
                          "top_by_fitness", "top_by_novelty", "agents_by_status"}
    params = {"agent_id": 2, "k": 5, "status": "proposed", "limit": -1}
    conn = sqlite3.connect(tmp_path / "c.db")
    for name in names:
        text = (PKG / "queries" / f"{name}.sql").read_text()
        assert text.startswith("--")
        rows = conn.execute(text, params).fetchall()  # plain sqlite3, no archive_db code involved
        assert isinstance(rows, list)
    conn.close()
    with ArchiveDB(tmp_path / "c.db") as db:
        assert [r["id"] for r in db.named_query("ancestors", agent_id=2)] == [0, 1, 2]
        assert db.named_query("children_counts") == [{"parent_id": 0, "children": 1}, {"parent_id": 1, "children": 1}]
        assert db.query_names() == names
        with pytest.raises(InvalidValueError):
            db.named_query("nope")
        with pytest.raises(InvalidValueError):
            db.named_query("../schema")


def test_named_queries_leave_out_agents_without_the_sorted_value(tmp_path):
    """The NULL filters apply (they once sat after a `--` comment on the same line, so they never did)."""
    db = new_db(tmp_path)
    db.propose([prop(0, None, "seed"), prop(1, 0), prop(2, 0)])
    db.record([archived(0, 1.0, novelty=0.2), archived(1, 2.0, novelty=None), archived(2, 0.5, novelty=0.1)])
    assert [r["id"] for r in db.named_query("top_by_novelty", k=5)] == [0, 2]
    assert [r["id"] for r in db.named_query("top_by_fitness", k=5)] == [1, 0, 2]
    db.close()
    for path in (PKG / "queries").glob("*.sql"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code, _, comment = line.partition("--")
            assert not (code.strip() and any(word in comment.split() for word in ("AND", "OR", "WHERE"))), \
                f"{path.name}:{number}: SQL after a comment on the same line never runs"


def test_named_query_with_sqlite3_cli(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("sqlite3"):
        pytest.skip("no sqlite3 CLI")
    db = new_db(tmp_path)
    db.propose([prop(0, None, "seed"), prop(1, 0)])
    db.close()
    out = subprocess.run(["sqlite3", str(tmp_path / "c.db"), "-cmd", ".parameter set :agent_id 1",
                          f".read {PKG / 'queries' / 'ancestors.sql'}"], capture_output=True, text=True, check=True)
    assert [line.split("|")[0] for line in out.stdout.split()] == ["0", "1"]


# ---------------------------------------------------------------------------------------------
# schema, migrations, refusals


def test_schema_sql_matches_migrations(tmp_path):
    db = new_db(tmp_path)
    db.close()
    documented = (PKG / "schema.sql").read_text()
    assert documented == archive_db.schema_sql(), "regenerate: python -m archive_db.schema > archive_db/schema.sql"
    assert archive_db.schema_sql(tmp_path / "c.db") == documented  # what a real opened DB holds
    assert SCHEMA_VERSION == len(migrations()) >= 2


def _v1_database(path):
    conn = sqlite3.connect(path, isolation_level=None)
    number, name, script = migrations()[0]
    assert number == 1
    for stmt in split_sql(script):
        conn.execute(stmt)
    conn.execute("PRAGMA user_version = 1")
    now = time.time()
    conn.execute("INSERT INTO runs(id, name, task, seed, config, descriptor_schema, state, status, created_at, "
                 "updated_at, schema_version) VALUES (1, 'old', 'toy', 3, '{}', ?, '{}', 'running', ?, ?, 1)",
                 ('{"names": ["x", "y"]}', now, now))
    conn.execute("INSERT INTO blobs(hash, content, compressed, size) VALUES ('b', x'61', 0, 1)")
    conn.execute("INSERT INTO genomes(hash, manifest, total_bytes) VALUES ('g', '{\"a\": \"b\"}', 1)")
    conn.execute("INSERT INTO agents(id, operator, seed, created_at, status, genome_hash, fitness, descriptors, "
                 "finish_seq) VALUES (0, 'seed', 0, ?, 'archived', 'g', 1.5, '[0.1, 0.2]', 1)", (now,))
    conn.execute("INSERT INTO agents(id, parent_id, depth, operator, seed, created_at) "
                 "VALUES (1, 0, 1, 'd', 1, ?)", (now,))
    conn.close()


def test_migrates_version_1_database(tmp_path):
    p = tmp_path / "old.db"
    _v1_database(p)
    assert "stats" not in {r[0] for r in sqlite3.connect(p).execute("SELECT name FROM sqlite_master")}
    with ArchiveDB(p) as db:
        assert db.schema_version == SCHEMA_VERSION
        assert db.get_run()["name"] == "old" and db.get_run()["schema_version"] == SCHEMA_VERSION
        assert db.agent(0)["fitness"] == 1.5 and db.agent(0)["descriptors"] == [0.1, 0.2]
        assert db.get_genome("g") == {"a": b"a"}
        db.record_stats(children_done=2)  # the 0002 table works
        db.record([archived(1, 2.0)])
        assert db.agent(1)["finish_seq"] == 2
    assert archive_db.schema_sql(p) == archive_db.schema_sql()


def test_newer_schema_refused_and_unchanged(tmp_path):
    p = tmp_path / "new.db"
    db = new_db(tmp_path, "new.db")
    db.close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    before = p.read_bytes()
    for ro in (False, True):
        with pytest.raises(NewerSchemaError) as e:
            ArchiveDB(p, readonly=ro)
        msg = str(e.value)
        assert str(p) in msg and str(SCHEMA_VERSION + 1) in msg and str(SCHEMA_VERSION) in msg
        assert "upgrade openended" in msg
        assert p.read_bytes() == before
    assert not Path(f"{p}-wal").exists() or Path(f"{p}-wal").stat().st_size == 0


@pytest.mark.parametrize("content", [b"this is a text file, not a database\n" * 10, os.urandom(4096),
                                     b"SQLite format 3\x00" + os.urandom(4080), b"tiny"])
def test_not_a_database_refused_and_unchanged(tmp_path, content):
    p = tmp_path / "junk.db"
    p.write_bytes(content)
    for ro in (False, True):
        with pytest.raises(NotADatabaseError, match="junk.db"):
            ArchiveDB(p, readonly=ro)
        assert p.read_bytes() == content


def test_foreign_sqlite_database_refused(tmp_path):
    p = tmp_path / "other.db"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = p.read_bytes()
    with pytest.raises(NotADatabaseError):
        ArchiveDB(p)
    assert p.read_bytes() == before


def test_readonly_refuses_writes_and_missing_file(tmp_path):
    db = new_db(tmp_path)
    db.close()
    with ArchiveDB(tmp_path / "c.db", readonly=True) as ro:
        assert ro.get_run()["name"] == "t"
        with pytest.raises(ArchiveDBError):
            ro.propose([Proposal(id=0, parent_id=None, operator="s", seed=0)])
        with pytest.raises(sqlite3.OperationalError):
            ro.conn.execute("DELETE FROM runs")
    with pytest.raises(FileNotFoundError):
        ArchiveDB(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


# ---------------------------------------------------------------------------------------------
# concurrent reader


def _writer(path, n, started):
    db = ArchiveDB(path)
    started.set()
    for s in range(0, n, 50):
        with db.transaction():
            _write_batch(db, s)
    db.close()


def _write_batch(db, s):
    db.propose([Proposal(id=i, parent_id=i - 1 if i else None, operator="op", seed=i) for i in range(s, s + 50)])
    db.record([Outcome(id=i, status="archived", files={"g": os.urandom(600)}, fitness=float(i), descriptors=[0, 0])
               for i in range(s, s + 50)])


def test_readonly_reader_while_writer_writes(tmp_path):
    p = tmp_path / "c.db"
    new_db(tmp_path).close()
    n = 3000
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_writer, args=(str(p), n, started))
    proc.start()
    try:
        assert started.wait(60)
        reader = ArchiveDB(p, readonly=True)
        seen = []
        deadline = time.time() + 60
        while proc.is_alive() and time.time() < deadline:
            c = reader.counts()
            total = sum(c.values())
            seen.append(total)
            assert c["archived"] == total  # every committed batch is whole: propose+record pairs never half-seen
            if total:
                assert len(reader.ancestors(total - 1)) == total
        proc.join(60)
        assert proc.exitcode == 0
        assert sum(reader.counts().values()) == n
        assert seen == sorted(seen)
        reader.close()
    finally:
        if proc.is_alive():
            proc.kill()
