"""Compact genomes (archive_db.recipes): children stored as their recipe regenerate bit for bit, across
reopening the store, resuming a campaign and a fresh process; a tampered recipe, seed or parent is an error
naming the agent, never a wrong genome; an old database migrates."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, toy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import ArchiveDB, Outcome, Proposal, Recipe, RegenerationError
from archive_db.sql import migrations
from openended.mutation.gaussian import VERSION, dump_params, recipe_params, regenerate

SCHEMA = {"names": ["x", "y"]}


def new_db(path: Path, every: int) -> ArchiveDB:
    db = ArchiveDB(path)
    db.materialise_every = every
    db.create_run(name="t", task="toy", seed=1, config={}, descriptor_schema=SCHEMA)
    return db


def done(i: int, files: dict[str, bytes], recipe: Recipe | None = None) -> Outcome:
    return Outcome(i, "archived", files=files, fitness=0.0, descriptors=[0.0, 0.0], recipe=recipe)


def grow(db: ArchiveDB, files: dict[int, dict[str, bytes]], parents: list[int], seeds: list[int], sigma: float,
         batch: int) -> None:
    """Gaussian children of the given parents (indices into what exists), recorded ``batch`` at a time with
    their recipes; ``files`` gains what each child really is."""
    params = recipe_params({"sigma": sigma}, "weights.npy")
    recipe = Recipe("gaussian", VERSION, params)
    pending: list[Outcome] = []
    for pick, seed in zip(parents, seeds, strict=True):
        i = len(files)
        parent = sorted(files)[pick % len(files)]
        db.propose([Proposal(i, parent, "gaussian", seed)])
        files[i] = regenerate(files[parent], seed, params)
        pending.append(done(i, files[i], recipe))
        if len(pending) >= batch:
            db.record(pending)
            pending = []
    db.record(pending)


def root(db: ArchiveDB, n: int, rng: np.random.Generator) -> dict[int, dict[str, bytes]]:
    files = {0: {"weights.npy": dump_params(rng.standard_normal(n)), "controller.txt": b"fixed\n"}}
    db.propose([Proposal(0, None, "seed", 0)])
    db.record([done(0, files[0])])
    return files


def digest(files: dict[str, bytes]) -> str:
    return hashlib.sha256(json.dumps({k: v.hex() for k, v in sorted(files.items())}).encode()).hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), every=st.sampled_from([1, 2, 3, 5, 32]), batch=st.integers(1, 7),
       sigma=st.sampled_from([0.0, 1e-12, 0.3, 5.0]),
       first=st.lists(st.integers(0, 10**6), min_size=1, max_size=30),
       second=st.lists(st.integers(0, 10**6), min_size=1, max_size=30), seed=st.integers(0, 2**63 - 1))
def test_compact_genomes_regenerate_exactly_across_reopen(tmp_path_factory, n, every, batch, sigma, first, second,
                                                          seed):
    path = tmp_path_factory.mktemp("r") / "c.db"
    rng = np.random.default_rng(seed)
    db = new_db(path, every)
    files = root(db, n, rng)
    seeds = [int(s) for s in rng.integers(0, 2**63, size=len(first) + len(second))]
    grow(db, files, first, seeds[:len(first)], sigma, batch)
    db.close()
    # a second session (as after a resume): an empty cache, its parents regenerated from the store
    db = ArchiveDB(path)
    db.materialise_every = every
    grow(db, files, second, seeds[len(first):], sigma, batch)
    db.close()
    with ArchiveDB(path, readonly=True) as ro:
        for i in sorted(files, reverse=True):  # the deepest first: nothing cached by an earlier read
            assert ro.agent_files(i) == files[i]
            assert ro.get_genome(ro.agent(i)["genome_hash"]) == files[i]
        compact = ro.conn.execute("SELECT COUNT(*), COALESCE(MAX(hops), 0) FROM recipes").fetchone()
        report = ro.check_integrity()
    assert report.ok, report.problems
    assert compact[1] < max(every, 1)
    if every == 1:
        assert compact[0] == 0
    elif sigma > 0:
        assert compact[0] >= 1  # the root's children at least
    assert report.regenerated == compact[0]


def test_a_fresh_process_regenerates_the_same_bytes(tmp_path):
    rng = np.random.default_rng(3)
    db = new_db(tmp_path / "c.db", 4)
    files = root(db, 142, rng)
    grow(db, files, list(range(60)), [int(s) for s in rng.integers(0, 2**63, size=60)], 0.3, 8)
    db.close()
    code = ("import sys, json, hashlib\nfrom archive_db import ArchiveDB\n"
            "db = ArchiveDB(sys.argv[1], readonly=True)\n"
            "out = {}\nfor i in range(61):\n"
            "    f = db.agent_files(i)\n"
            "    out[i] = hashlib.sha256(json.dumps({k: v.hex() for k, v in sorted(f.items())}).encode()).hexdigest()\n"
            "print(json.dumps(out))\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.db")], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert json.loads(run.stdout) == {str(i): digest(f) for i, f in files.items()}
    with sqlite3.connect(tmp_path / "c.db") as con:
        assert con.execute("SELECT COUNT(*) FROM recipes").fetchone()[0] >= 40


def chain(tmp_path: Path, every: int = 32) -> tuple[Path, dict[int, dict[str, bytes]]]:
    """A root and a line of 6 Gaussian descendants (1 is the root's child, 6 the deepest), all compact."""
    rng = np.random.default_rng(0)
    db = new_db(tmp_path / "c.db", every)
    files = root(db, 20, rng)
    grow(db, files, [len(files) - 1 + k for k in range(6)], list(range(101, 107)), 0.3, 1)
    db.close()
    with sqlite3.connect(tmp_path / "c.db") as con:
        assert con.execute("SELECT COUNT(*) FROM recipes").fetchone()[0] == 6
    return tmp_path / "c.db", files


def tamper(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DROP TRIGGER agents_terminal_frozen")  # the store refuses to change a finished agent
    for sql in statements:
        con.execute(sql)
    con.close()


@pytest.mark.parametrize("what, sql, first_bad", [
    ("recipe parameters", "UPDATE recipe_methods SET params = json_set(params, '$.sigma', 0.31)", 1),
    ("a seed", "UPDATE agents SET seed = seed + 1 WHERE id = 4", 4),
    ("a parent", "UPDATE agents SET parent_id = 2 WHERE id = 4", 4),
    ("the root's stored weights", "UPDATE blobs SET content = zeroblob(length(content)), compressed = 0 "
     "WHERE size > 100", 0),
    ("the operator version", "UPDATE recipe_methods SET version = 99", 1),
])
def test_a_tampered_recipe_or_parent_is_an_error_naming_the_agent(tmp_path, what, sql, first_bad):
    path, files = chain(tmp_path)
    tamper(path, sql)
    with ArchiveDB(path, readonly=True) as db:
        for i in range(first_bad):
            assert db.agent_files(i) == files[i]  # what was not touched still reads
        with pytest.raises(RegenerationError) as err:
            db.agent_files(6)
        assert err.value.agent_id == 6 and "agent 6" in str(err.value)
        report = db.check_integrity()
    assert not report.ok
    assert any(f"agent {first_bad}" in p or "blob" in p for p in report.problems), report.problems


def test_a_recipe_that_does_not_regenerate_is_stored_in_full(tmp_path):
    rng = np.random.default_rng(1)
    db = new_db(tmp_path / "c.db", 32)
    files = root(db, 10, rng)
    db.propose([Proposal(1, 0, "gaussian", 7)])
    files[1] = regenerate(files[0], 7, recipe_params({"sigma": 0.3}, "weights.npy"))
    wrong = Recipe("gaussian", VERSION, recipe_params({"sigma": 0.2}, "weights.npy"))  # not how it was made
    db.record([done(1, files[1], wrong)])
    assert db.conn.execute("SELECT COUNT(*) FROM recipes").fetchone()[0] == 0
    unknown = Recipe("gaussian", VERSION + 1, recipe_params({"sigma": 0.3}, "weights.npy"))
    db.propose([Proposal(2, 1, "gaussian", 8)])
    files[2] = regenerate(files[1], 8, recipe_params({"sigma": 0.3}, "weights.npy"))
    db.record([done(2, files[2], unknown)])
    assert db.conn.execute("SELECT COUNT(*) FROM recipes").fetchone()[0] == 0
    assert [db.agent_files(i) for i in range(3)] == [files[0], files[1], files[2]]


def test_materialise_stores_a_compact_genome_in_full(tmp_path):
    path, files = chain(tmp_path)
    with ArchiveDB(path) as db:
        assert db.materialise([3, 0]) == 1
        assert db.conn.execute("SELECT agent_id FROM recipes ORDER BY 1").fetchall() == [(1,), (2,), (4,), (5,), (6,)]
        assert db.check_integrity().ok
    tamper(path, "UPDATE agents SET seed = seed + 1 WHERE id = 2")  # below the materialised agent 3: not needed
    with ArchiveDB(path, readonly=True) as db:
        assert db.agent_files(6) == files[6]
        with pytest.raises(RegenerationError):
            db.agent_files(2)


def test_a_version_4_database_migrates_and_keeps_its_genomes(tmp_path, database_at):
    path = tmp_path / "old.db"
    con = database_at(path, 4, SCHEMA)
    con.close()
    with ArchiveDB(path) as db:  # the writer migrates (a v4 store wrote genomes in full, as this one can)
        assert db.schema_version == len(migrations())
        files = root(db, 5, np.random.default_rng(2))
        assert db.agent_files(0) == files[0]
        fks = {r[3] for r in db.conn.execute("PRAGMA foreign_key_list(agents)")}
        assert "genome_hash" not in fks and db.check_integrity().ok


def test_a_maze_like_campaign_resumed_regenerates_what_an_uncompacted_one_stored(tmp_path, ray_address, monkeypatch):
    from openended.config import load_config
    from openended.engine import Campaign

    def run(db: Path, budget: int) -> None:
        overrides = {"task": toy("plain"), "db": str(db), "seed": 5, "budget.max_children": budget,
                     "sandbox.kind": "inprocess", "max_in_flight": 2, "batch_size": 16, "ray_address": ray_address,
                     "stats_every_seconds": 60.0}
        assert Campaign(load_config(None, overrides)).run().status == "finished"

    # the same two sessions (a budget stop at 150, then a resume to 400), once with every genome in full
    monkeypatch.setattr(ArchiveDB, "materialise_every", 1)
    run(tmp_path / "full.db", 150)
    run(tmp_path / "full.db", 400)
    monkeypatch.setattr(ArchiveDB, "materialise_every", 4)
    run(tmp_path / "compact.db", 150)
    run(tmp_path / "compact.db", 400)  # resumed: its parents come back regenerated
    with ArchiveDB(tmp_path / "full.db", readonly=True) as full, \
            ArchiveDB(tmp_path / "compact.db", readonly=True) as compact:
        n_compact = compact.conn.execute("SELECT COUNT(*) FROM recipes").fetchone()[0]
        assert full.conn.execute("SELECT COUNT(*) FROM recipes").fetchone()[0] == 0
        assert n_compact > 200
        for i in range(400):
            assert compact.agent_files(i) == full.agent_files(i), i
        assert compact.check_integrity().ok
