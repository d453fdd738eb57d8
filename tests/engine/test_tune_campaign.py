"""The tune operator in a campaign (real Ray): one task per group, every evaluation a child with its own row,
the same store at any scheduling and after kill -9 and resume; a lost task fails each of its children."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, kill_when, resume_cli
from test_reproducible import _count, _store

from openended.config import ConfigError, load_config
from openended.engine import Campaign
from openended.engine.dispatch import Dispatcher, TaskLost
from openended.engine.jobs import Tune
from openended.engine.runtime import resolve_operators
from openended.engine.tune_groups import TuneGroups
from openended.mutation.tune import group_of
from openended.tasks import load_task

EVALUATIONS = 6


def _task(tmp_path: Path) -> str:
    """toycode with float constants: a user task folder that only this test has."""
    folder = tmp_path / "floats"
    shutil.copytree(ROOT / "tests" / "tasks" / "toycode", folder)
    (folder / "seed" / "agent.py").write_text("a = 1.0\nb = 2.0\nif a < b:\n    a = a + 1.0\n")
    return str(folder)


def _overrides(task: str, db: Path, ray_address: str, **extra) -> dict:
    return {"task": task, "db": str(db), "seed": 3, "budget.max_children": 1 + 5 * EVALUATIONS,
            "sandbox.kind": "inprocess", "mutation.operator": "tune", "ray_address": ray_address,
            "mutation.params": {"evaluations": EVALUATIONS, "batch": 2, "sigma": 0.3}, "stats_every_seconds": 60.0,
            **extra}


def test_every_evaluation_is_a_child_of_the_tuned_agent_and_the_search_improves(tmp_path, ray_address):
    task = _task(tmp_path)
    summary = Campaign(load_config(None, _overrides(task, tmp_path / "a.db", ray_address, max_in_flight=3))).run()
    assert summary.status == "finished", summary
    con = sqlite3.connect(tmp_path / "a.db")
    rows = con.execute("SELECT id, parent_id, operator, seed, status, fitness FROM agents ORDER BY id").fetchall()
    assert len(rows) == 1 + 5 * EVALUATIONS
    seed_fitness = rows[0][5]
    groups: dict = {}
    for agent_id, parent, operator, seed, status, _ in rows[1:]:
        assert operator == "tune" and status in ("archived", "rejected")
        groups.setdefault(group_of(agent_id, seed), []).append((agent_id, parent))
    assert len(groups) == 5  # five groups of EVALUATIONS consecutive children, each of one parent
    for (_, first), members in groups.items():
        assert [m[0] for m in members] == list(range(first, first + EVALUATIONS))
        assert len({m[1] for m in members}) == 1
    assert max(r[5] for r in rows) > seed_fitness + 0.5  # the constants moved towards (3, 3)
    # a second campaign with other scheduling is the same campaign (the reproducible mode)
    Campaign(load_config(None, _overrides(task, tmp_path / "b.db", ray_address, max_in_flight=1))).run()
    assert _store(tmp_path / "a.db") == _store(tmp_path / "b.db")


def test_the_tuned_agent_is_chosen_by_fitness_unless_tournament_is_0(tmp_path, ray_address):
    task = _task(tmp_path)

    def tuned_parents_fitness(tournament: int) -> list[float]:
        db = tmp_path / f"t{tournament}.db"
        params = {"evaluations": EVALUATIONS, "batch": 2, "sigma": 0.3, "tournament": tournament}
        overrides = _overrides(task, db, ray_address, **{"mutation.params": params, "budget.max_children": 61,
                                                         "selection.strategy": "novelty"})
        assert Campaign(load_config(None, overrides)).run().status == "finished"
        con = sqlite3.connect(db)
        return [f for (f,) in con.execute("SELECT p.fitness FROM agents c JOIN agents p ON p.id = c.parent_id "
                                          "WHERE c.id > 0 AND (c.seed & 255) = 0")]

    by_novelty, by_fitness = tuned_parents_fitness(0), tuned_parents_fitness(16)
    assert len(by_novelty) == len(by_fitness) == 10
    # novelty picks the odd ones out, often the worse; the tournament picks the fittest it draws
    assert sum(by_fitness) / 10 > sum(by_novelty) / 10 + 0.1


def test_only_an_agent_with_literals_is_tuned():
    groups = TuneGroups("agent.py", evaluations=EVALUATIONS, ints=False, tournament=8)
    genomes = {1: {"agent.py": b"a = 1.0\n"}, 2: {"agent.py": b"a = 1\n"}, 3: {"agent.py": b"b = (\n"}}
    assert groups.size(genomes[1]) == EVALUATIONS
    assert groups.size(genomes[2]) == 0  # best fit's like: nothing to tune
    assert groups.size(genomes[3]) == 0  # code that does not parse
    assert TuneGroups("agent.py", evaluations=1, ints=True, tournament=8).size(genomes[2]) == 1


def test_tune_alone_tunes_the_tournaments_pick_or_fails_never_the_selections(tmp_path, ray_address):
    toycode = str(ROOT / "tests" / "tasks" / "toycode")  # its seed, the fitter root, has ints only
    floats = tmp_path / "floats"
    floats.mkdir()
    (floats / "agent.py").write_text("a = -10.0\nb = -10.0\n")  # the worse root, with literals to tune
    overrides = _overrides(toycode, tmp_path / "alone.db", ray_address, **{
        "budget.max_children": 14, "mutation.initial_agents": [str(floats)]})
    assert Campaign(load_config(None, overrides)).run().status == "finished"
    con = sqlite3.connect(tmp_path / "alone.db")
    rows = con.execute("SELECT parent_id, status, fail_reason FROM agents WHERE id > 1").fetchall()
    assert rows == [(0, "failed", "tune: agent.py has no float literals to tune")] * 12


def test_a_parent_with_nothing_to_tune_gets_one_child_that_fails_saying_why(tmp_path, ray_address):
    toycode = str(ROOT / "tests" / "tasks" / "toycode")  # its constants are ints: nothing to tune by default
    overrides = _overrides(toycode, tmp_path / "ints.db", ray_address, **{"budget.max_children": 4})
    assert Campaign(load_config(None, overrides)).run().status == "finished"
    con = sqlite3.connect(tmp_path / "ints.db")
    rows = con.execute("SELECT seed & 255, status, fail_stage, fail_reason FROM agents WHERE id > 0").fetchall()
    assert rows == [(0, "failed", "mutation", "tune: agent.py has no float literals to tune")] * 3


def test_in_a_portfolio_tune_gives_way_to_another_operator_when_nothing_has_literals(tmp_path, ray_address):
    toycode = str(ROOT / "tests" / "tasks" / "toycode")  # ints only: tune (floats by default) finds nothing
    for in_flight, db in ((4, tmp_path / "ints.db"), (1, tmp_path / "again.db")):
        overrides = _overrides(toycode, db, ray_address, **{"budget.max_children": 40, "max_in_flight": in_flight,
                                                            "mutation.portfolio": ["ast", "tune"]})
        assert Campaign(load_config(None, overrides)).run().status == "finished"
    con = sqlite3.connect(tmp_path / "ints.db")
    operators = con.execute("SELECT operator, count(*) FROM agents WHERE id > 0 GROUP BY operator").fetchall()
    assert operators == [("ast", 39)]  # no child that fails at once for want of literals
    assert _store(tmp_path / "ints.db") == _store(tmp_path / "again.db")  # the redraw comes from the seed too
    # with ints tuned, the same campaign tunes: the bandit's picks of tune make whole groups again
    overrides = _overrides(toycode, tmp_path / "tuned.db", ray_address, **{
        "budget.max_children": 40, "mutation.portfolio": ["ast", "tune"],
        "mutation.params": {"evaluations": EVALUATIONS, "batch": 2, "sigma": 0.3, "ints": True}})
    assert Campaign(load_config(None, overrides)).run().status == "finished"
    con = sqlite3.connect(tmp_path / "tuned.db")
    tuned = con.execute("SELECT count(*) FROM agents WHERE operator = 'tune' AND status != 'failed'").fetchone()[0]
    assert tuned >= EVALUATIONS


def test_tune_is_refused_where_it_cannot_run(tmp_path):
    def start(**overrides):
        Campaign(load_config(None, {"db": str(tmp_path / "x.db"), "mutation.operator": "tune", **overrides}))

    with pytest.raises(ConfigError, match="do not apply"):
        start(task="maze-medium")
    with pytest.raises(ConfigError, match="operator tune .* uses the gateway"):
        start(task="coding-agent-small")
    with pytest.raises(ValueError, match="evaluations must be an integer"):
        start(task="circle-packing", **{"mutation.params": {"evaluations": 1000}})
    assert not (tmp_path / "x.db").exists()  # refused before the database was made


def test_with_a_model_the_default_portfolio_tunes_where_tune_can_run(tmp_path):
    hosted = [{"name": "m", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]
    llm_operators = ["llm_diff", "llm_rewrite", "llm_crossover", "ast"]
    for task, expected in (("circle-packing", [*llm_operators, "tune"]), ("coding-agent-small", llm_operators)):
        config = load_config(None, {"db": str(tmp_path / "x.db"), "task": task, "llm.models": hosted})
        assert resolve_operators(config, load_task(task)).mutation.portfolio == expected
        # The embedded model alone only edits: its whole programs hardly ever run.
        embedded = load_config(None, {"db": str(tmp_path / "x.db"), "task": task, "llm.local": True})
        edits = [op for op in expected if op not in ("llm_rewrite", "llm_crossover")]
        assert resolve_operators(embedded, load_task(task)).mutation.portfolio == edits
    without_model = load_config(None, {"db": str(tmp_path / "x.db"), "task": "circle-packing"})
    assert resolve_operators(without_model, load_task("circle-packing")).mutation.operator == "ast"


def _cli(python, env, task, db, ray_address):
    # groups of 6 against blocks of 32: the in-order application stops inside groups, so kills land there
    config = db.parent / "tune.toml"
    config.write_text('[mutation]\noperator = "tune"\nparams = { evaluations = 6, batch = 4 }\n')
    cmd = [python, "-m", "openended", "run", str(config), "--task", task, "--db", str(db), "--budget", "241",
           "--sandbox", "inprocess", "--max-in-flight", "3", "--seed", "8", "--ray-address", ray_address, "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _partly_finished_groups(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        groups: dict = {}
        for agent_id, seed, finished in con.execute("SELECT id, seed, finished_at IS NOT NULL FROM agents "
                                                    "WHERE operator = 'tune'"):
            groups.setdefault(group_of(agent_id, seed), []).append(finished)
    finally:
        con.close()
    return sum(1 for members in groups.values() if 0 < sum(members) < len(members))


def test_kill_9_in_the_middle_of_tune_groups_then_resume_gives_the_same_store(tmp_path, ray_address, python,
                                                                            cli_env):
    task = _task(tmp_path)
    ref = tmp_path / "ref.db"
    proc = _cli(python, cli_env, task, ref, ray_address)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    db = tmp_path / "killed.db"
    split = 0
    for target in (30, 110):
        kill_when(_cli(python, cli_env, task, db, ray_address), lambda: _count(db), target)
        split += _partly_finished_groups(db)
    assert split > 0, "no kill left a group partly recorded: the test would not test the resume of one"
    resume_cli(python, cli_env, db, ray_address)
    assert _store(db) == _store(ref)


class _LosingExecutor:
    """Every task's worker dies."""

    def __init__(self):
        self.sent: list = []

    def evaluate(self, jobs):
        self.sent.append(jobs)
        return len(self.sent)

    def mutate(self, job, model):
        raise AssertionError("no mutation here")

    def ready(self, handles, timeout):
        return list(handles)

    def result(self, handle):
        raise TaskLost("the node died")

    def cancel(self, handle):
        pass


def test_a_lost_tune_task_fails_each_child_it_was_to_report():
    got: list = []
    ex = _LosingExecutor()
    d = Dispatcher(ex, lambda mutation, results: got.extend(results), max_in_flight=2, batch_size=4, cpus=2,
                   task_timeout=10.0, models={})
    d.queue(Tune((12, 13, 14), first_id=10, count=5, seed=256))
    d.fill(lambda n: [])
    assert [[type(j).__name__ for j in jobs] for jobs in ex.sent] == [["Tune"]]  # alone in its task
    assert d.children_in_flight == 3
    d.collect(0)
    assert [(r.agent_id, r.fail_stage) for r in got] == [(12, "sandbox"), (13, "sandbox"), (14, "sandbox")]
    assert all("the node died" in (r.fail_reason or "") for r in got)
