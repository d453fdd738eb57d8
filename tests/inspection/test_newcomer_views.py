"""`show`, `diff` and `tree` as a newcomer reads them (issue 15), on real SQLite files through the real CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import toy
from inspect_campaigns import CODE_CONFIG, CODE_SCHEMA, cli, cli_json

from archive_db import ArchiveDB, Outcome, Proposal
from openended.config import load_config
from openended.engine import run_campaign


def test_evaluation_rows_carry_the_fitness_their_result_gave(tmp_path, ray_address):
    db = tmp_path / "c.db"
    run_campaign(load_config(None, {"task": toy(), "db": str(db), "budget.max_children": 12,
                                    "sandbox.kind": "process", "archive.kind": "grid"}))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute("SELECT a.id, a.status, a.fitness, e.fitness FROM agents a "
                       "JOIN evaluations e ON e.agent_id = a.id").fetchall()
    con.close()
    evaluated = [r for r in rows if r[1] in ("archived", "rejected")]
    assert len(evaluated) >= 10
    assert all(r[3] is not None and r[3] == r[2] for r in evaluated), evaluated
    aid, _, fitness, _ = evaluated[-1]
    info = cli_json("show", db, aid)
    assert [e["fitness"] for e in info["evaluations"]] == [fitness]
    code, out, _ = cli("show", db, aid)
    assert code == 0
    table = out[out.index("evaluations"):out.index("files")]
    assert f"{fitness:.6g}" in table


def _code_db(path: Path) -> Path:
    """A seed with a two-file genome, a child that failed at mutation (no genome), one not mutated yet, and a
    child whose mutation worked."""
    seed = {"agent.py": b"def act(x):\n    return x\n", "util.py": b"K = 1\n"}
    with ArchiveDB(path) as db:
        db.create_run(name="code", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
        db.propose([Proposal(0, None, "seed", 0), Proposal(1, 0, "llm_diff", 1), Proposal(2, 0, "llm_diff", 2),
                    Proposal(3, 0, "llm_diff", 3)])
        db.record([Outcome(0, "archived", files=seed, fitness=1.0, descriptors=[0.5, 0.5], cell=0),
                   Outcome(1, "failed", fail_stage="mutation", fail_reason="the model's reply had no SEARCH/REPLACE "
                                                                          "block"),
                   Outcome(3, "mutated", files={**seed, "util.py": b"K = 2\n"})])
    return path


def test_diff_of_a_child_with_no_genome_says_why(tmp_path):
    db = _code_db(tmp_path / "code.db")
    for args in (("1",), ("0", "1"), ("1", "0")):
        code, out, err = cli("diff", db, *args)
        assert code == 2 and out == ""
        assert "agent 1 has no genome: it failed at mutation (the model's reply had no SEARCH/REPLACE block); " \
               "nothing to diff" in err
        assert "def act" not in err
    code, _, err = cli("diff", db, "1", "--json")
    assert code == 2 and "agent 1 has no genome" in err
    code, _, err = cli("diff", db, "2")
    assert code == 2 and "agent 2 has no genome yet (status proposed)" in err
    # a child that has a genome still diffs against its parent: one line of one file changed
    result = cli_json("diff", db, "3")
    assert [(f["path"], f["added"], f["removed"]) for f in result["files"]] == [("util.py", 1, 1)]
