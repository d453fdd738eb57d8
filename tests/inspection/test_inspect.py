"""Inspection commands on a database made by a real campaign (and a small hand-built code campaign).

The maze campaign (:func:`inspect_campaigns.build_campaign_db`) is run once per session, shared
with test_plots, test_serve_browser and test_export_git; while it runs a reader thread inspects it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inspect_campaigns import (
    CODE_CONFIG,
    CODE_SCHEMA,
    build_campaign_db,
    build_code_db,
    cli,
    cli_json,
    rows,
    sha256_of,
)

from archive_db import SCHEMA_VERSION, ArchiveDB, Outcome, Proposal
from openended import inspection

# ---------------------------------------------------------------------------------------------
# the shared campaign database (built once per session, while a reader thread inspects it)


@pytest.fixture(scope="session")
def campaign(tmp_path_factory, ray_address) -> dict:
    return build_campaign_db(tmp_path_factory)


@pytest.fixture(scope="session")
def maze_db(campaign) -> Path:
    return campaign["path"]


@pytest.fixture(scope="module")
def code_db(tmp_path_factory) -> Path:
    return build_code_db(tmp_path_factory.mktemp("code") / "code.db")


# ---------------------------------------------------------------------------------------------
# reading while the campaign writes


def test_views_and_cli_work_while_the_campaign_writes(campaign):
    live, final = campaign["live"], campaign["summary"]
    errors = [e["error"] for e in live if "error" in e]
    assert not errors, errors[:3]
    seen = [e["done"] for e in live]
    assert len(seen) >= 3, "the reader should have read several snapshots during the campaign"
    assert any(d < final.children_done for d in seen), "no read happened while the campaign was still writing"
    assert seen == sorted(seen), "a later read saw fewer finished children than an earlier one"
    for e in live:
        if "lineage" in e:
            chain = e["lineage"]
            assert chain[0][1] is None and all(chain[i][1] == chain[i - 1][0] for i in range(1, len(chain)))
            assert e["diff"] == (chain[-2][0] if len(chain) > 1 else None)
            assert e["show"] == chain[-1][0] and e["tree"] >= 1
    cli_runs = [e["cli"] for e in live if "cli" in e]
    assert cli_runs, "the CLI never ran during the campaign"
    code, out, err = cli_runs[0]
    assert code == 0, err
    assert len(json.loads(out)) >= 1


def test_cli_reads_past_an_open_write_transaction(maze_db, tmp_path):
    """A writer holding uncommitted rows (as the driver does mid-batch) blocks no reader and
    leaks nothing into what the commands print."""

    copy = tmp_path / "busy.db"
    shutil.copy(maze_db, copy)
    if Path(f"{maze_db}-wal").exists():
        shutil.copy(f"{maze_db}-wal", f"{copy}-wal")
    before = {r["id"] for r in cli_json("top", copy, "-k", "1000")}
    writer = ArchiveDB(copy)
    try:
        with writer.transaction():
            nid = writer.next_agent_id()
            writer.propose([Proposal(id=nid, parent_id=0, operator="gaussian", seed=1)])
            writer.record([Outcome(id=nid, status="archived", files={"weights.npy": b"x"}, fitness=1e9,
                                   descriptors=[10.0, 10.0])])
            t0 = time.perf_counter()
            assert {r["id"] for r in cli_json("top", copy, "-k", "1000")} == before
            assert cli_json("status", copy)["best_agent"] != nid
            assert cli_json("tree", copy, "--max-nodes", "20")["total"] == nid
            assert time.perf_counter() - t0 < 20
        assert cli_json("top", copy, "-k", "1")[0]["id"] == nid  # committed: now visible
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------
# top, show, lineage


def test_top_ranks_like_sqlite(maze_db):
    for by in ("fitness", "novelty"):
        got = cli_json("top", maze_db, "-k", "7", "--by", by)
        want = rows(maze_db, f"SELECT id FROM agents WHERE status IN ('evaluated','archived','rejected') "
                             f"AND {by} IS NOT NULL ORDER BY {by} DESC, id LIMIT 7")
        assert [r["id"] for r in got] == [w[0] for w in want]
        elites = {r[0] for r in rows(maze_db, "SELECT agent_id FROM elites")}
        assert [r["elite"] for r in got] == [r["id"] in elites for r in got]
    code, _, err = cli("top", maze_db, "--by", "speed")
    assert code == 2 and "'fitness' or 'novelty'" in err


def test_best_lineage_runs_from_the_root_to_the_best_agent(maze_db):
    best = cli_json("top", maze_db, "-k", "1")[0]
    steps = cli_json("lineage", maze_db, "best")
    assert steps[-1]["id"] == best["id"] and steps[-1]["fitness"] == best["fitness"]
    assert steps[0]["parent_id"] is None and steps[0]["depth"] == 0
    assert len(steps) == best["depth"] + 1 > 2, "the campaign should be deep enough to test a lineage"
    for prev, step in zip(steps[:-1], steps[1:], strict=True):
        assert step["parent_id"] == prev["id"]
        assert step["depth"] == prev["depth"] + 1
        assert step["delta_fitness"] == pytest.approx(step["fitness"] - prev["fitness"])
    for step in steps:  # operator and cell as the store has them
        op, cell = rows(maze_db, "SELECT operator, cell FROM agents WHERE id = ?", step["id"])[0]
        assert (step["operator"], step["cell"]) == (op, cell)
    assert cli_json("lineage", maze_db, str(best["id"])) == steps


def test_show_gives_metadata_feedback_and_files(maze_db, code_db):
    best = cli_json("top", maze_db, "-k", "1")[0]
    info = cli_json("show", maze_db, "best")
    assert info["agent"]["id"] == best["id"] and info["agent"]["fitness"] == best["fitness"]
    # the maze's feedback only says that a child solved it; its fitness and descriptors say where it ended
    want = "solved: ended" if best["fitness"] > -5 else ""
    assert info["feedback"][:len("solved: ended")] == want
    (weights,) = info["files"]
    assert weights["path"] == "weights.npy" and weights["kind"] == "npy" and weights["shape"] == [142]
    with ArchiveDB(maze_db, readonly=True) as db:
        data = db.agent_files(best["id"])["weights.npy"]
    assert weights["sha256"] == hashlib.sha256(data).hexdigest()
    children = rows(maze_db, "SELECT COUNT(*) FROM agents WHERE parent_id = ?", best["id"])[0][0]
    assert info["children"] == children

    info = cli_json("show", code_db, "2", "--contents")
    assert [e["stage"] for e in info["evaluations"]] == ["full"]
    assert info["evaluations"][0]["result"] == {"fitness": 3.0}
    assert {f["path"]: f["text"] for f in info["files"]}["agent.py"].startswith("def act(x):\n    return 2 * x")
    code, out, _ = cli("show", code_db, "2", "--contents")  # the human view prints the same things
    assert code == 0 and "feedback for agent 2" in out and "return 2 * x" in out and "full" in out
    code, _, err = cli("show", code_db, "42")
    assert code == 2 and "unknown agent id 42" in err


# ---------------------------------------------------------------------------------------------
# diff


def _diff_values(text: str, sign: str) -> list[float]:
    return [float(line[1:]) for line in text.splitlines()
            if line.startswith(sign) and not line.startswith(sign * 3) and not line[1:].startswith("#")]


def test_diff_shows_what_the_gaussian_mutation_changed(maze_db):
    best = cli_json("top", maze_db, "-k", "1")[0]
    result = cli_json("diff", maze_db, "best")
    assert (result["from"], result["to"]) == (best["parent_id"], best["id"])
    with ArchiveDB(maze_db, readonly=True) as db:
        import io

        parent = np.load(io.BytesIO(db.agent_files(best["parent_id"])["weights.npy"]))
        child = np.load(io.BytesIO(db.agent_files(best["id"])["weights.npy"]))
    changed = parent != child
    assert changed.any()
    assert sorted(_diff_values(result["text"], "-")) == sorted(parent[changed].tolist())
    assert sorted(_diff_values(result["text"], "+")) == sorted(child[changed].tolist())
    assert result["files"] == [{"path": "weights.npy", "added": int(changed.sum()), "removed": int(changed.sum()),
                                "binary": False}]
    code, out, _ = cli("diff", maze_db, str(best["id"]))  # plain text in a pipe: the diff itself
    assert code == 0 and out == result["text"]


def test_diff_of_code_shows_the_edited_lines(code_db):
    result = cli_json("diff", code_db, "1")
    assert (result["from"], result["to"]) == (0, 1)
    body = [line for line in result["text"].splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert body == ["-x = 1", "+x = 2"]
    assert result["files"] == [{"path": "agent.py", "added": 1, "removed": 1, "binary": False}]  # README unchanged
    both = cli_json("diff", code_db, "0", "2")
    body = [line for line in both["text"].splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert body == ["-    return x", "+    return 2 * x", "-x = 1", "+x = 2"]
    root = cli_json("diff", code_db, "0")
    assert root["from"] is None and "+x = 1" in root["text"].splitlines()
    code, out, _ = cli("diff", code_db, "2", "2")
    assert code == 0 and "no differences" in out


# ---------------------------------------------------------------------------------------------
# tree


def test_tree_prunes_to_the_best_and_archived_branches(maze_db):
    total = rows(maze_db, "SELECT COUNT(*) FROM agents")[0][0]
    t = cli_json("tree", maze_db, "--max-nodes", "40")
    assert t["pruned"] and t["total"] == total and t["shown"] == len(t["nodes"]) <= 40
    shown = {n["id"]: n for n in t["nodes"]}
    lineage = [s["id"] for s in cli_json("lineage", maze_db, "best")]
    assert set(lineage) <= set(shown) and t["best_agent"] == lineage[-1]
    assert {i for i, n in shown.items() if n["best_lineage"]} == set(lineage)
    assert all(n["parent_id"] is None or n["parent_id"] in shown for n in shown.values())
    elites = {r[0] for r in rows(maze_db, "SELECT agent_id FROM elites")}
    parents_shown = {n["parent_id"] for n in shown.values()}
    leaves = [n for i, n in shown.items() if i not in parents_shown]
    assert leaves and all(n["status"] == "archived" or n["id"] == t["best_agent"] for n in leaves)
    assert sum(n["elite"] for n in shown.values()) >= 5 and all(n["elite"] == (i in elites) for i, n in shown.items())
    children = dict(rows(maze_db, "SELECT parent_id, COUNT(*) FROM agents GROUP BY parent_id"))
    for i, n in shown.items():
        shown_kids = sum(1 for m in shown.values() if m["parent_id"] == i)
        assert n["hidden_children"] == children.get(i, 0) - shown_kids
    full = cli_json("tree", maze_db, "--all")
    assert not full["pruned"] and full["shown"] == total
    code, out, _ = cli("tree", maze_db, "--max-nodes", "40")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("(showing 40 of") or lines[0].startswith(f"(showing {t['shown']} of")
    assert len(lines) == t["shown"] + 1
    assert sum("<- best" in line for line in lines) == 1


@st.composite
def forests(draw):
    n = draw(st.integers(1, 40))
    parents = [None]
    for i in range(1, n):
        parents.append(draw(st.one_of(st.none(), st.integers(0, i - 1))) if draw(st.booleans()) else i - 1)
    statuses = draw(st.lists(st.sampled_from(["archived", "rejected", "failed"]), min_size=n, max_size=n))
    fitness = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n))
    return parents, statuses, fitness


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forest=forests(), max_nodes=st.integers(1, 30))
def test_tree_pruning_invariants(tmp_path_factory, forest, max_nodes):
    """Whatever the forest: the pruned tree is closed under parents, keeps the best lineage, fits
    in max_nodes (unless the best lineage alone is longer), counts hidden children exactly, and
    prints every shown agent exactly once."""
    parents, statuses, fitness = forest
    path = tmp_path_factory.mktemp("forest") / "f.db"
    db = ArchiveDB(path)
    db.create_run(name="f", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
    db.propose([Proposal(id=i, parent_id=p, operator="op", seed=i) for i, p in enumerate(parents)])
    db.record([Outcome(id=i, status=s, files={"g": b"%d" % i}, fitness=f, descriptors=[0.5, 0.5])
               if s != "failed" else Outcome(id=i, status="failed", fail_stage="sandbox", fail_reason="crash")
               for i, (s, f) in enumerate(zip(statuses, fitness, strict=True))])
    db.set_elites({i: i for i, s in enumerate(statuses) if s == "archived"})
    db.close()
    with inspection.open_db(path) as ro:
        t = inspection.tree(ro, max_nodes=max_nodes)
        best = ro.best_agent()
    shown = {n["id"]: n for n in t["nodes"]}
    lineage = []
    node = None if best is None else best["id"]
    while node is not None:
        lineage.append(node)
        node = parents[node]
    assert set(lineage) <= set(shown)
    assert all(n["parent_id"] is None or n["parent_id"] in shown for n in shown.values())
    assert len(shown) <= max(max_nodes, len(lineage)) or not t["pruned"]
    if t["pruned"]:  # every branch kept leads to an archived agent or the best one
        leaves = set(shown) - {n["parent_id"] for n in shown.values()}
        assert all(statuses[i] == "archived" or i == t["best_agent"] for i in leaves)
    assert t["pruned"] == (len(parents) > max_nodes)
    for i, n in shown.items():
        kids = [c for c, p in enumerate(parents) if p == i]
        assert n["hidden_children"] == len([c for c in kids if c not in shown])
    text = inspection.format_tree(t)
    ids = [int(word[1:]) for line in text.splitlines() for word in line.split() if word.startswith("#")][:]
    assert sorted(ids) == sorted(shown)
    path.unlink()


# ---------------------------------------------------------------------------------------------
# read-only query

REFUSED = [
    ("INSERT INTO agents(id, operator, seed, created_at) VALUES (99999, 'x', 0, 0)", "INSERT"),
    ("UPDATE agents SET fitness = 0", "UPDATE"),
    ("DELETE FROM agents", "DELETE"),
    ("ATTACH DATABASE ':memory:' AS other", "ATTACH"),
    ("DETACH DATABASE main", "DETACH"),
    ("PRAGMA user_version = 5", "PRAGMA user_version"),
    ("PRAGMA journal_mode = delete", "PRAGMA journal_mode"),
    ("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint"),
    ("DROP TABLE agents", "schema"),
    ("CREATE TABLE t(x)", "schema"),
    ("VACUUM", "VACUUM"),
    ("VACUUM INTO 'copy.db'", "VACUUM"),
    ("BEGIN IMMEDIATE", "transaction"),
    ("SELECT 1; DELETE FROM agents", "one statement"),
    ("WITH x AS (SELECT 1) DELETE FROM agents", "DELETE"),
]


@pytest.mark.parametrize("sql, what", REFUSED)
def test_query_refuses_writes_and_leaves_the_file_alone(maze_db, tmp_path, monkeypatch, sql, what):
    monkeypatch.chdir(tmp_path)  # VACUUM INTO would write copy.db here
    before = sha256_of(maze_db)
    with pytest.raises(inspection.QueryRefused) as err:
        inspection.read_only_query(maze_db, sql)
    assert str(err.value).startswith("query: refused: ") and what in str(err.value)
    assert sha256_of(maze_db) == before
    assert not (tmp_path / "copy.db").exists()


def test_query_cli_reads_and_refuses(maze_db):
    before = sha256_of(maze_db)
    n = rows(maze_db, "SELECT COUNT(*) FROM agents WHERE depth >= 2")[0][0]
    got = cli_json("query", maze_db, "SELECT COUNT(*) AS n FROM agents WHERE depth >= :d", "-p", "d=2")
    assert got == [{"n": n}]
    assert cli_json("query", maze_db, "PRAGMA user_version") == [{"user_version": SCHEMA_VERSION}]
    assert [c["name"] for c in cli_json("query", maze_db, "PRAGMA table_info(agents)")][:2] == ["id", "parent_id"]
    code, out, _ = cli("query", maze_db, "SELECT id FROM agents ORDER BY id", "--max-rows", "3")
    assert code == 0 and "3 rows (more not shown" in out
    # the table keeps what SQL gave: column names to paste back, every digit of a float
    finished, agent = rows(maze_db, "SELECT finished_at, id FROM agents WHERE finished_at IS NOT NULL LIMIT 1")[0]
    code, out, _ = cli("query", maze_db, "SELECT finished_at FROM agents WHERE id = :i", "-p", f"i={agent}")
    assert code == 0 and "finished_at" in out and repr(finished) in out, out
    code, _, err = cli("query", maze_db, "PRAGMA user_version=5")
    assert code == 2 and "query: refused: PRAGMA user_version = 5 is not allowed" in err
    code, _, err = cli("query", maze_db, "SELECT nope FROM agents")
    assert code == 2 and "no such column: nope" in err
    assert sha256_of(maze_db) == before


def test_query_refusal_from_a_real_process(maze_db, cli_env):
    before = sha256_of(maze_db)
    out = subprocess.run([sys.executable, "-m", "openended", "query", str(maze_db), "ATTACH ':memory:' AS x"],
                         capture_output=True, text=True, env=cli_env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "error: query: refused: ATTACH is not allowed (read-only)"
    assert sha256_of(maze_db) == before


# ---------------------------------------------------------------------------------------------
# export


def test_export_writes_the_agents_files(code_db, tmp_path):
    got = cli_json("export", code_db, "5", tmp_path / "out")
    with ArchiveDB(code_db, readonly=True) as db:
        files = db.agent_files(5)
    assert sorted(got["files"]) == sorted(str(tmp_path / "out" / p) for p in files)
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    code, _, err = cli("export", code_db, "5", tmp_path / "out")
    assert code == 2 and "already exists" in err
    assert cli("export", code_db, "2", tmp_path / "out", "--overwrite")[0] == 0
    assert (tmp_path / "out" / "agent.py").read_bytes() == db_file(code_db, 2, "agent.py")


def db_file(path, agent, name):
    with ArchiveDB(path, readonly=True) as db:
        return db.agent_files(agent)[name]


def test_export_refuses_paths_outside_the_folder_and_agents_without_files(code_db, tmp_path):
    code, _, err = cli("export", code_db, "7", tmp_path / "out")
    assert code == 2 and "'../escape.py'" in err and "outside" in err
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "out").exists()
    code, _, err = cli("export", code_db, "3", tmp_path / "out")  # failed in mutation: no genome
    assert code == 2 and "no files" in err and "failed" in err


def test_export_best_maze_agent_round_trips(maze_db, tmp_path):
    got = cli_json("export", maze_db, "best", tmp_path)
    best = cli_json("top", maze_db, "-k", "1")[0]
    assert got["agent"] == best["id"]
    assert (tmp_path / "weights.npy").read_bytes() == db_file(maze_db, best["id"], "weights.npy")


# ---------------------------------------------------------------------------------------------
# success rates, progress, compare


def test_success_rates_by_operator_and_model(code_db):
    with inspection.open_db(code_db) as db:
        rates = inspection.success_rates(db)
    agents = rows(code_db, "SELECT operator, model, status FROM agents WHERE parent_id IS NOT NULL")
    for key, col in (("operator", 0), ("model", 1)):
        expected = {}
        for a in agents:
            name = a[col] if a[col] is not None else "none"
            e = expected.setdefault(name, {"children": 0, "finished": 0, "archived": 0, "failed": 0})
            e["children"] += 1
            e["finished"] += a[2] in ("archived", "rejected", "failed")
            e["archived"] += a[2] == "archived"
            e["failed"] += a[2] == "failed"
        got = {r["name"]: r for r in rates[key]}
        assert set(got) == set(expected)
        for name, e in expected.items():
            assert {k: got[name][k] for k in e} == e
            want = e["archived"] / e["finished"] if e["finished"] else None
            assert got[name]["success_rate"] == want
    assert {r["name"] for r in rates["model"]} == {"gemma", "gpt", "none"}


def test_progress_replay_matches_the_campaigns_own_statistics(maze_db, campaign):
    summary = campaign["summary"]
    with inspection.open_db(maze_db) as db:
        curve = inspection.progress_curve(db)
        last = db.latest_stats()
    n = rows(maze_db, "SELECT COUNT(*) FROM agents WHERE finish_seq IS NOT NULL")[0][0]
    assert curve["evaluations"] == list(range(1, n + 1))
    assert curve["qd_score"][-1] == pytest.approx(summary.qd_score, rel=1e-9)
    assert curve["qd_score"][-1] == pytest.approx(last["qd_score"], rel=1e-9)
    assert curve["coverage"][-1] == pytest.approx(summary.coverage, rel=1e-12)
    assert curve["coverage"][-1] == pytest.approx(last["coverage"], rel=1e-12)
    assert curve["best_fitness"][-1] == summary.best_fitness
    for key in ("qd_score", "coverage", "best_fitness"):
        assert curve[key] == sorted(curve[key]), f"{key} never decreases in a grid archive"


def test_compare_reports_each_campaign_and_the_threshold(maze_db, code_db):
    best = rows(maze_db, "SELECT MAX(fitness) FROM agents")[0][0]
    threshold = best - 60.0
    got = cli_json("compare", maze_db, code_db, "--threshold", str(threshold))
    assert [Path(r["db"]).name for r in got] == ["maze.db", "code.db"]
    first = rows(maze_db, "SELECT MIN(finish_seq) FROM agents WHERE fitness >= ?", threshold)[0][0]
    assert got[0]["evaluations_to_threshold"] == first
    assert got[0]["best_fitness"] == best and got[0]["archive"] == "grid"
    code_first = rows(code_db, "SELECT MIN(finish_seq) FROM agents WHERE fitness >= ?", threshold)[0][0]
    assert got[1]["evaluations_to_threshold"] == code_first  # None when never reached
    default = cli_json("compare", code_db)[0]  # threshold from the run's budget.target_fitness
    assert default["threshold"] == 2.5
    assert default["evaluations_to_threshold"] == rows(code_db, "SELECT finish_seq FROM agents WHERE id = 2")[0][0]
    # code.db, replayed: the 'all' archive's members binned on the 4x4 grid
    assert default["coverage"] == pytest.approx(len({(0, 0), (1, 0), (3, 3), (2, 1), (2, 2)}) / 16)
    assert default["qd_score"] == pytest.approx(0.5 + 1.0 + 3.0 + 2.0 + 0.1)
    code, out, err = cli("compare", maze_db, code_db)
    assert code == 0 and "maze.db" in out and "code.db" in out
    assert "different tasks" in err, "a maze and a code campaign side by side are said not to compare (issue 15)"
    code, out, err = cli("compare", maze_db, maze_db)
    assert code == 0 and "different tasks" not in err


def test_missing_or_foreign_database_gives_a_clear_error(tmp_path):
    code, _, err = cli("top", tmp_path / "nope.db")
    assert code == 2 and "no such database" in err
    (tmp_path / "text.db").write_text("hello")
    code, _, err = cli("lineage", tmp_path / "text.db", "1")
    assert code == 2 and "not an SQLite database" in err


def test_long_lineage_prints_as_plain_aligned_text(tmp_path):
    """Past RICH_MAX_ROWS steps the lineage is printed without rich (fast), one line per step."""
    from openended.inspect_cli import RICH_MAX_ROWS

    n = RICH_MAX_ROWS + 50
    db = ArchiveDB(tmp_path / "chain.db")
    db.create_run(name="chain", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
    db.propose([Proposal(id=i, parent_id=i - 1 if i else None, operator="op", seed=i) for i in range(n)])
    db.record([Outcome(id=i, status="archived", files={"g": b"%d" % i}, fitness=float(i), descriptors=[0.5, 0.5])
               for i in range(n)])
    db.close()
    code, out, _ = cli("lineage", tmp_path / "chain.db", str(n - 1))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"lineage of agent {n - 1} ({n} steps, root first)"
    assert lines[1].split()[:3] == ["depth", "id", "parent"] and set(lines[2]) <= {"-", " "}
    body = [line.split() for line in lines[3:]]
    assert [int(b[1]) for b in body] == list(range(n))
    assert body[0][2] == "-" and all(int(b[2]) == int(b[1]) - 1 for b in body[1:])


def test_a_campaign_with_no_agents_yet(tmp_path):
    db = ArchiveDB(tmp_path / "new.db")
    db.create_run(name="new", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
    db.close()
    assert cli("top", tmp_path / "new.db")[1].strip() == "no evaluated agents with a fitness yet"
    assert cli_json("top", tmp_path / "new.db") == []
    assert cli("tree", tmp_path / "new.db")[1].strip() == "(no agents yet)"
    code, _, err = cli("lineage", tmp_path / "new.db", "best")
    assert code == 2 and "no evaluated agent yet" in err
    (row,) = cli_json("compare", tmp_path / "new.db")
    assert (row["evaluations"], row["qd_score"], row["best_fitness"]) == (0, 0.0, None)


def test_package_names_resolve_to_the_functions_not_the_modules():
    """`openended.inspection` imports its names on first use: each public name is the function or
    class, never a submodule of the same name, whatever was imported first."""
    import importlib
    import types

    for module in ("access", "agents", "gitexport", "lineage_tree", "metrics", "npy_text"):
        importlib.import_module(f"openended.inspection.{module}")
    for name in inspection.__all__:
        assert not isinstance(getattr(inspection, name), types.ModuleType), name
    assert set(inspection.__all__) <= set(dir(inspection))
    with pytest.raises(AttributeError):
        _ = inspection.no_such_view


# ---------------------------------------------------------------------------------------------
# a file damaged past a sound header


def test_a_database_damaged_inside_is_a_plain_error_naming_it(maze_db, tmp_path):
    """Pages of the agents table overwritten in a copy: the header is sound, so the file opens and the damage
    shows only when a command reads those pages. Each command says so in one line, naming the file and the
    way to recover; none prints a traceback."""
    import sqlite3

    path = tmp_path / "damaged.db"
    src, dst = sqlite3.connect(maze_db), sqlite3.connect(path)
    src.backup(dst)
    src.close()
    pages = [p for (p,) in dst.execute("SELECT pageno FROM dbstat WHERE name = 'agents' AND pagetype = 'leaf' "
                                       "ORDER BY pageno")]
    page_size = dst.execute("PRAGMA page_size").fetchone()[0]
    dst.close()
    assert len(pages) >= 6, "the campaign should fill several pages of agents"
    data = bytearray(path.read_bytes())
    for page in pages[len(pages) // 2:len(pages) // 2 + 3]:
        data[(page - 1) * page_size:page * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))
    out_dir = tmp_path / "figures"
    for args in (["top", path, "-k", "100000"], ["tree", path], ["compare", path], ["plot", path, "--out", out_dir],
                 ["resume", path, "--quiet", "--ray-address", "127.0.0.1:9"]):
        code, out, err = cli(*args)
        assert code == 2, (args, code, out[-500:], err[-500:])
        assert f"error: {path} is damaged" in err and ".recover" in err, (args, err)
        assert "Traceback" not in out + err, args
