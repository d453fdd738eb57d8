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


def _forest_db(path: Path, parents: list[int | None]) -> Path:
    with ArchiveDB(path) as db:
        db.create_run(name="f", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
        db.propose([Proposal(id=i, parent_id=p, operator="op", seed=i) for i, p in enumerate(parents)])
        db.record([Outcome(id=i, status="archived", files={"g": b"%d" % i}, fitness=float(i), descriptors=[0.5, 0.5])
                   for i in range(len(parents))])
    return path


def _parents_from_text(text: str) -> dict[int, int | None]:
    """Read a tree back: a node's parent is the last node printed one step (3 characters) to its left."""
    last_at: dict[int, int] = {}
    parents: dict[int, int | None] = {}
    for line in text.splitlines():
        col = line.index("#")
        aid = int(line[col + 1:].split()[0])
        parents[aid] = None if col == 0 else last_at[col - 3]
        assert col == 0 or line[col - 3:col] in ("└─ ", "├─ "), line
        last_at[col] = aid
    return parents


def test_tree_indents_an_only_child_under_its_parent(tmp_path):
    db = _forest_db(tmp_path / "t.db", [None, 0, 1, 0, None])  # 0 -> 1 -> 2, 0 -> 3; a second root 4
    code, out, _ = cli("tree", db)
    assert code == 0
    lines = out.splitlines()
    assert [line.split(" op ")[0] for line in lines] == ["#0", "├─ #1", "│  └─ #2", "└─ #3", "#4"]
    assert _parents_from_text(out) == {0: None, 1: 0, 2: 1, 3: 0, 4: None}


def test_tree_text_reads_back_as_the_same_forest(monkeypatch):
    import random

    from openended.inspection import lineage_tree

    monkeypatch.setattr(lineage_tree, "MAX_INDENT", 10**6)  # no folding here: every line is read back
    for seed in range(40):
        rng = random.Random(seed)
        n = rng.randint(1, 40)
        parents = [None] + [rng.choice([None, i - 1, rng.randrange(i)]) for i in range(1, n)]
        nodes = [{"id": i, "parent_id": p, "depth": 0, "status": "archived", "operator": "op", "model": None,
                  "fitness": 1.0, "cell": None, "archive_event": None, "elite": False, "best_lineage": False,
                  "hidden_children": 0} for i, p in enumerate(parents)]
        text = lineage_tree.format_tree({"nodes": nodes, "pruned": False, "best_agent": None})
        assert _parents_from_text(text) == dict(enumerate(parents)), (seed, text)


def test_a_deep_lineage_stays_narrow(tmp_path):
    from openended.inspection.lineage_tree import MAX_INDENT

    n = 2000
    db = _forest_db(tmp_path / "chain.db", [None] + list(range(n - 1)))
    code, out, _ = cli("tree", db, "--all")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == n and [int(line.split("#")[1].split()[0]) for line in lines] == list(range(n))
    assert max(line.index("#") for line in lines) <= MAX_INDENT + 3
    folded = [i for i, line in enumerate(lines) if line.startswith("… └─ ")]
    assert folded and all(line.startswith("…") for line in lines[folded[0]:])
    # within a stretch between folds, each step is one indent further right
    cols = [line.index("#") for line in lines[:folded[0]]]
    assert cols == [3 * i for i in range(folded[0])]
