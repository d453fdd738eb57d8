"""`show`, `diff` and `tree` as a newcomer reads them (issue 15), on real SQLite files through the real CLI."""

from __future__ import annotations

import sqlite3

from conftest import toy
from inspect_campaigns import cli, cli_json

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
