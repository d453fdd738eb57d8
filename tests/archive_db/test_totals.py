"""The running totals (migration 0006): counts by status, usage, duplicates, operator statistics and the
archive's size read from trigger-kept rows equal what scanning every agent gives, after any sequence of
store writes, and after migrating a database that had agents before the totals existed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import STATUSES, ArchiveDB, Outcome, Proposal

SCHEMA = {"names": ["x", "y"]}
SCANNED_OPERATORS = """
SELECT operator, COALESCE(model, 'none') AS model, COUNT(*), SUM(status IN ('archived', 'rejected', 'failed')),
       SUM(status = 'archived'), SUM(status = 'failed')
FROM agents WHERE parent_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"""


def scanned(db: ArchiveDB) -> dict:
    """Every total the store keeps, computed the slow way."""
    c = db.conn
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(c.execute("SELECT status, COUNT(*) FROM agents GROUP BY status").fetchall())
    tokens, cost = c.execute("SELECT COALESCE(SUM(tokens_in + tokens_out), 0), COALESCE(SUM(cost), 0.0) "
                             "FROM agents").fetchone()
    return {"counts": counts, "tokens": tokens, "cost": cost,
            "duplicates": c.execute("SELECT COUNT(*) FROM agents WHERE duplicate_of IS NOT NULL").fetchone()[0],
            "elites": c.execute("SELECT COUNT(*) FROM elites").fetchone()[0],
            "operators": [tuple(r) for r in c.execute(SCANNED_OPERATORS)]}


def kept(db: ArchiveDB) -> dict:
    usage = db.usage_totals()
    return {"counts": db.counts(), "tokens": usage["tokens"], "cost": usage["cost"],
            "duplicates": db.duplicate_count(), "elites": db.elite_count(),
            "operators": [(r["operator"], r["model"], r["children"], r["finished"], r["archived"], r["failed"])
                          for r in db.named_query("operator_success")]}


def same(a: dict, b: dict) -> None:
    assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)
    assert {k: v for k, v in a.items() if k != "cost"} == {k: v for k, v in b.items() if k != "cost"}


step = st.tuples(st.sampled_from(["archived", "rejected", "failed", "mutated", "dup"]),
                 st.sampled_from(["gaussian", "llm_diff", "ast"]), st.sampled_from([None, "m1", "m2"]),
                 st.integers(0, 50), st.sampled_from([0.0, 0.1, 0.2, 1e-6]), st.integers(0, 5))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=40), batch=st.integers(1, 6))
def test_totals_equal_a_scan_after_any_writes(tmp_path_factory, steps, batch):
    db = ArchiveDB(tmp_path_factory.mktemp("t") / "c.db")
    db.create_run(name="t", task="toy", seed=0, config={}, descriptor_schema=SCHEMA)
    db.propose([Proposal(0, None, "seed", 0)])
    db.record([Outcome(0, "archived", files={"a": b"0"}, fitness=0.0, descriptors=[0.0, 0.0], cell=0)])
    db.set_elites({0: 0})
    pending: list[Outcome] = []
    for i, (status, operator, model, tokens, cost, cell) in enumerate(steps, start=1):
        db.propose([Proposal(i, i - 1, operator, i, model=model)])
        files = {"a": str(i).encode()}
        if status == "mutated":
            pending.append(Outcome(i, "mutated", files=files, tokens_in=tokens, cost=cost))
        elif status == "dup":
            pending.append(Outcome(i, "rejected", files={"a": b"0"}, fitness=0.0, descriptors=[0.0, 0.0],
                                   duplicate_of=0, tokens_out=tokens, cost=cost))
        elif status == "failed":
            pending.append(Outcome(i, "failed", fail_stage="mutation", fail_reason="x", tokens_in=tokens, cost=cost))
        else:
            pending.append(Outcome(i, status, files=files, fitness=1.0, descriptors=[0.0, 0.0], tokens_in=tokens,
                                   cost=cost, cell=cell if status == "archived" else None))
        if len(pending) >= batch:
            db.record(pending)
            pending = []
            same(kept(db), scanned(db))
        if status == "archived":
            db.set_elites({cell: i})
        elif cell == 5:
            db.remove_elites([0, 1])
    db.record(pending)
    # the mutated ones finish later (an UPDATE moves them between rows), their cost counted once
    db.record([Outcome(o.id, "archived", fitness=2.0, descriptors=[0.0, 0.0], cost=0.5)
               for o in pending if o.status == "mutated"])
    same(kept(db), scanned(db))
    assert db.check_integrity().ok
    db.conn.execute("UPDATE agent_totals SET agents = agents + 1 WHERE status = 'archived'")
    assert any("agent_totals" in p for p in db.check_integrity().problems)
    db.close()


def test_a_version_5_database_gets_its_totals_from_its_agents(tmp_path, database_at):
    path = tmp_path / "old.db"
    con = database_at(path, 5, {"names": ["x", "y"]})
    con.execute("INSERT INTO agents(id, parent_id, operator, seed, created_at, status, tokens_in, cost, fail_stage, "
                "fail_reason) VALUES (0, NULL, 'seed', 0, 0, 'proposed', 0, 0, NULL, NULL), "
                "(1, 0, 'llm_diff', 1, 0, 'proposed', 7, 0.25, NULL, NULL), "
                "(2, 0, 'llm_diff', 2, 0, 'failed', 3, 0.5, 'mutation', 'x')")
    con.execute("INSERT INTO elites(cell, agent_id, fitness, updated_at) VALUES (3, 0, 1.0, 0)")
    con.close()
    with ArchiveDB(path) as db:
        same(kept(db), scanned(db))
        assert db.counts()["proposed"] == 2 and db.usage_totals() == {"tokens": 10, "cost": 0.75}
        assert db.elite_count() == 1
