"""A sandbox run stored once for the batch it evaluated (migration 0011), and elite rows without copies (0012):
the ``evaluations`` view reads back exactly the rows that were added, per agent and in order; lookups use the
index; a version-10 database keeps its evaluations and elites."""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import ArchiveDB, Evaluation, Outcome, Proposal

SCHEMA = {"names": ["x", "y"], "bounds": [[0, 1], [0, 1]], "bins": [10, 10]}
COLUMNS = ("agent_id", "stage", "started_at", "seconds", "exit_status", "fitness", "result", "stdout_tail",
           "stderr_tail", "failure_kind")


def new_db(path, n: int, fitness: dict[int, float | None]) -> ArchiveDB:
    """Agents 0..n-1: those in ``fitness`` finished (archived with that fitness, or failed for None), the rest
    still proposed."""
    db = ArchiveDB(path)
    db.create_run(name="t", task="toy", seed=1, config={}, descriptor_schema=SCHEMA)
    db.propose([Proposal(id=i, parent_id=None, operator="gaussian", seed=i) for i in range(n)])
    files = {"w.npy": b"weights"}
    db.record([Outcome(id=i, status="archived", files=files, fitness=f, descriptors=[0.5, 0.5]) if f is not None
               else Outcome(id=i, status="failed", fail_stage="evaluation", fail_reason="crashed")
               for i, f in fitness.items()])
    return db


def as_row(ev: Evaluation) -> tuple:
    return (ev.agent_id, ev.stage, ev.started_at, ev.seconds, ev.exit_status, ev.fitness, ev.result,
            ev.stdout_tail, ev.stderr_tail, ev.failure_kind)


def read_all(db: ArchiveDB) -> list[tuple]:
    rows = db.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM evaluations ORDER BY id, agent_id").fetchall()
    return [(*r[:6], None if r[6] is None else json.loads(r[6]), *r[7:]) for r in rows]


def random_evaluations(rng: random.Random, n: int, fitness: dict[int, float | None]) -> list[Evaluation]:
    """Batches of consecutive agents evaluated in one run (same stage, times and output), with children whose
    row differs (a failure, its own output, a fitness that is not the agent's, a second stage) or who have none,
    in id order."""
    out: list[Evaluation] = []
    i = 0
    while i < n:
        size = rng.randint(1, 40)
        started, seconds = rng.uniform(0, 1e9), rng.uniform(0, 5)
        for aid in range(i, min(n, i + size)):
            f = fitness.get(aid)
            kind = rng.random()
            if kind < 0.05:
                continue  # no row: it failed before its run (a sibling's run must not cover it)
            if kind < 0.1:
                out.append(Evaluation(aid, "evaluate", seconds, exit_status=1, stderr_tail="Traceback",
                                      failure_kind="crash", started_at=started))
            elif kind < 0.2:
                out.append(Evaluation(aid, "evaluate", seconds, exit_status=0, fitness=rng.uniform(-9, 9),
                                      result={"note": aid}, started_at=started))
            else:
                out.append(Evaluation(aid, "evaluate", seconds, exit_status=0, fitness=f, started_at=started))
            if rng.random() < 0.05:
                out.append(Evaluation(aid, "full", 0.5, exit_status=0, fitness=f, started_at=started + 1))
        i += size
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200), share_finished=st.floats(0.0, 1.0))
def test_every_evaluation_reads_back_as_it_was_added(tmp_path_factory, seed, n, share_finished):
    rng = random.Random(seed)
    fitness = {i: (rng.uniform(-300, 0) if rng.random() < 0.9 else None) for i in range(n)
               if rng.random() < share_finished}
    path = tmp_path_factory.mktemp("runs") / "e.db"
    db = new_db(path, n, fitness)
    evaluations = random_evaluations(rng, n, fitness)
    cut = rng.randrange(len(evaluations) + 1)  # added in two calls, as two commits of the recorder would
    db.add_evaluations(evaluations[:cut])
    db.add_evaluations(evaluations[cut:])
    expected = [as_row(ev) for ev in evaluations]
    assert read_all(db) == expected
    for aid in rng.sample(range(n), min(n, 10)):
        got = [tuple(row[c] for c in COLUMNS) for row in db.evaluations(aid)]
        assert got == [r for r in expected if r[0] == aid]
    stored = db.conn.execute("SELECT COUNT(*), COALESCE(SUM(agents), 0) FROM evaluation_runs").fetchone()
    assert stored[0] <= len(evaluations) and stored[1] == len(evaluations)
    assert db.check_integrity().ok
    db.close()
    with ArchiveDB(path, readonly=True) as ro:  # a fresh connection reads the same
        assert read_all(ro) == expected


def plan(db: ArchiveDB, sql: str) -> str:
    return " | ".join(r[-1] for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql))


def test_a_batch_is_one_run_and_reads_by_agent_use_the_keys(tmp_path):
    n = 3000
    db = new_db(tmp_path / "b.db", n, {i: -float(i) for i in range(n)})
    db.add_evaluations([Evaluation(i, "evaluate", 0.2, exit_status=0, fitness=-float(i), started_at=5.0 + i // 1000)
                        for i in range(n)])
    runs = db.conn.execute("SELECT agents, fitness FROM evaluation_runs ORDER BY id").fetchall()
    assert runs == [(1000, None)] * 3
    assert [r["fitness"] for r in db.evaluations(n - 1)] == [-float(n - 1)]
    lookup = plan(db, "SELECT * FROM evaluations WHERE agent_id = 5")
    assert "SEARCH m USING PRIMARY KEY (agent_id=?)" in lookup and "SEARCH r USING INTEGER PRIMARY KEY" in lookup
    # joined from agents (raw SQL, the dashboard): one key lookup per agent, never a scan per agent
    for where in ("a.status = 'archived'", "e.stage = 'evaluate'", "e.failure_kind = 'crash'"):
        joined = plan(db, f"SELECT a.id, e.seconds FROM agents a JOIN evaluations e ON e.agent_id = a.id WHERE {where}")
        scans = [step for step in joined.split(" | ") if step.startswith("SCAN")]
        assert len(scans) <= 1, joined
    db.close()


def test_a_version_10_database_keeps_its_evaluations_and_elites(tmp_path, database_at):
    path = tmp_path / "v10.db"
    con = database_at(path, 10, {"names": ["x", "y"]})
    con.execute("INSERT INTO agents(id, operator, seed, created_at, status, fitness, descriptors, novelty) VALUES "
                "(0, 'seed', 0, 0, 'proposed', NULL, NULL, NULL), (1, 'seed', 1, 0, 'proposed', NULL, NULL, NULL)")
    con.execute("UPDATE agents SET status = 'archived', genome_hash = 'h', fitness = id + 0.5, "
                "descriptors = '[0.1, 0.2]', novelty = 2.0")
    con.execute("INSERT INTO evaluations(agent_id, stage, started_at, seconds, exit_status, fitness, result) VALUES "
                "(0, 'evaluate', 1.0, 0.5, 0, 0.5, '{\"a\": 1}'), (1, 'evaluate', 1.0, 0.5, 0, 7.0, NULL), "
                "(1, 'full', 2.0, 0.5, 0, 1.5, NULL)")
    con.execute("INSERT INTO elites(cell, agent_id, fitness, updated_at) VALUES (4, 1, 1.5, 0), (9, 0, 0.5, 0)")
    con.close()
    with ArchiveDB(path) as db:
        assert [(r["stage"], r["fitness"], r["result"]) for r in db.evaluations(0)] == [("evaluate", 0.5, {"a": 1})]
        # a row of one agent keeps its own fitness, even where it is not the agent's
        assert [(r["stage"], r["fitness"]) for r in db.evaluations(1)] == [("evaluate", 7.0), ("full", 1.5)]
        assert [(e["cell"], e["agent_id"], e["fitness"], e["descriptors"]) for e in db.elites()] == [
            (4, 1, 1.5, [0.1, 0.2]), (9, 0, 0.5, [0.1, 0.2])]
        assert db.elite_count() == 2
        db.set_elites({9: 1})
        assert db.elite_count() == 2 and db.elites()[1]["agent_id"] == 1
        assert "fitness" not in {r[1] for r in db.conn.execute("PRAGMA table_info(elites)")}


def test_a_run_over_missing_agents_is_reported(tmp_path):
    db = new_db(tmp_path / "i.db", 4, {0: -1.0, 1: -2.0, 2: -3.0})
    db.add_evaluations([Evaluation(i, "evaluate", 0.2, exit_status=0, fitness=-1.0 - i, started_at=5.0)
                        for i in range(3)])
    assert db.check_integrity().ok
    db.conn.execute("INSERT INTO evaluation_agents(agent_id, run_id) VALUES (3, 1)")  # agent 3 is only proposed
    db.conn.execute("UPDATE evaluation_runs SET agents = 4")
    problems = db.check_integrity().problems
    assert any("evaluation run 1" in p and "1 of them unfinished" in p for p in problems), problems
    db.conn.execute("UPDATE evaluation_runs SET agents = 5")
    assert any("says 5 agents, evaluation_agents names 4" in p for p in db.check_integrity().problems)
    db.close()
