"""Staged (cascade) evaluation: a three-stage task (quick -> medium -> full); a child that fails a
stage's rule never starts the next; each stage is its own row; kill -9 between stages resumes without
running a finished stage again; the same seed gives the same store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, count_in

from openended.config import load_config
from openended.engine import Campaign
from openended.tasks import TaskError, load_task

STAGED = ROOT / "tests" / "tasks" / "staged"
NAMES = ["quick", "medium", "full"]


def staged(variant: str) -> str:
    return f"{STAGED}:{variant}"


def _run(db: Path, ray_address: str, *, task: str, budget: int, max_in_flight: int = 2, seed: int = 7,
         **extra) -> None:
    overrides = {"task": task, "db": str(db), "seed": seed, "budget.max_children": budget,
                 "sandbox.kind": "inprocess", "max_in_flight": max_in_flight, "ray_address": ray_address,
                 "stats_every_seconds": 60.0, **extra}
    summary = Campaign(load_config(None, overrides)).run()
    assert summary.status == "finished", summary


def _read(db: Path) -> tuple[dict[int, dict], dict[int, list[tuple[str, float | None]]]]:
    con = sqlite3.connect(db)
    try:
        agents = {row[0]: {"parent": row[1], "status": row[2], "fitness": row[3], "cell": row[5],
                           "reached": (json.loads(row[4]) or {}).get("stage_reached") if row[4] else None}
                  for row in con.execute("SELECT id, parent_id, status, fitness, metrics, cell FROM agents")}
        stages: dict[int, list[tuple[str, float | None]]] = {i: [] for i in agents}
        for aid, stage, fitness in con.execute("SELECT agent_id, stage, fitness FROM evaluations ORDER BY id"):
            stages[aid].append((stage, fitness))
        return agents, stages
    finally:
        con.close()


def _check_cascade(agents: dict[int, dict], stages: dict[int, list], *, partial_final: bool = False) -> None:
    """Every child ran a prefix of the stages, went on only when it passed, and reached what it says."""
    for aid, rows in stages.items():
        names = [name for name, _ in rows]
        assert names == NAMES[:len(names)] and names, (aid, rows)  # each stage once, in order
        agent = agents[aid]
        assert agent["reached"] == names[-1]
        assert agent["fitness"] == pytest.approx(rows[-1][1])  # the last stage's fitness is the child's
        if agent["parent"] is None:
            assert names == NAMES, "a root runs every stage"
            continue
        quick = rows[0][1]
        assert (len(names) > 1) == (quick >= -1.5), (aid, rows)  # stage 2 only after passing stage 1
        if len(names) > 1:
            parent_fitness = agents[agent["parent"]]["fitness"]
            assert (len(names) > 2) == (rows[1][1] > parent_fitness), (aid, rows, parent_fitness)
        if names != NAMES:
            assert agent["status"] == ("archived" if partial_final and agent["cell"] is not None else "rejected")
            if not partial_final:
                assert agent["cell"] is None


def test_children_that_fail_a_stage_never_start_the_next(tmp_path, ray_address):
    db = tmp_path / "c.db"
    _run(db, ray_address, task=staged("parent"), budget=80)
    agents, stages = _read(db)
    assert len(agents) == 80
    _check_cascade(agents, stages)
    counts = {name: sum(1 for rows in stages.values() if name in [n for n, _ in rows]) for name in NAMES}
    # the test means something only if each rule stopped some children and let others through
    assert counts["quick"] == 80 and 0 < counts["full"] < counts["medium"] < counts["quick"], counts
    con = sqlite3.connect(db)
    try:  # the archive sees only children that finished the whole cascade
        reached = {json.loads(m)["stage_reached"] for (m,) in con.execute(
            "SELECT a.metrics FROM elites e JOIN agents a ON a.id = e.agent_id")}
    finally:
        con.close()
    assert reached == {"full"}


def test_partial_fitness_can_be_final(tmp_path, ray_address):
    db = tmp_path / "f.db"
    _run(db, ray_address, task=staged("final"), budget=60)
    agents, stages = _read(db)
    _check_cascade(agents, stages, partial_final=True)
    assert any(a["status"] == "archived" and a["reached"] != "full" for a in agents.values())


def test_archive_median_rule_is_reproducible(tmp_path, ray_address):
    # the median is the archive's when the child was proposed: the same at any scheduling
    _run(tmp_path / "a.db", ray_address, task=staged("median"), budget=70, max_in_flight=3)
    _run(tmp_path / "b.db", ray_address, task=staged("median"), budget=70, max_in_flight=1)
    a, b = _read(tmp_path / "a.db"), _read(tmp_path / "b.db")
    assert a == b
    agents, stages = a
    depth = [len(rows) for aid, rows in stages.items() if agents[aid]["parent"] is not None]
    assert 1 in depth and 2 in depth and 3 in depth, "every stage stops some child"


def _cli(python, env, db: Path, ray_address: str, *extra: str) -> subprocess.Popen:
    # tournament selection: children near (1, 1) keep passing the quick stage, so a kill can land between
    # stages late in the campaign too (novelty selection sends them far away, where all stop at quick)
    cmd = [python, "-m", "openended", "run", "--task", staged("slow"), "--db", str(db), "--budget", "60",
           "--sandbox", "inprocess", "--max-in-flight", "2", "--seed", "5", "--selection", "tournament",
           "--ray-address", ray_address, "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _between_stages(db: Path) -> int:
    """Children stored with a finished stage but no outcome yet (a kill now lands between stages)."""
    return count_in(db, "SELECT COUNT(DISTINCT a.id) FROM agents a JOIN evaluations e ON e.agent_id = a.id "
                        "WHERE a.status = 'mutated'")

def _store(db: Path) -> list:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, parent_id, seed, status, genome_hash, fitness, descriptors, cell, "
                           "archive_event FROM agents ORDER BY id").fetchall()
    finally:
        con.close()


def test_kill_9_between_stages_then_resume(tmp_path, ray_address, python, cli_env):
    ref = tmp_path / "ref.db"
    proc = _cli(python, cli_env, ref, ray_address)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    db = tmp_path / "killed.db"
    proc = _cli(python, cli_env, db, ray_address)
    deadline = time.monotonic() + 120
    killed_between: set[int] = set()
    while proc.poll() is None and time.monotonic() < deadline:
        if _between_stages(db) >= 1 and len(_read(db)[0]) >= 20:
            # Frozen (the driver is the database's only writer), the store cannot move on to the child's
            # next stage between this check and the kill, as it did on a loaded machine.
            os.kill(proc.pid, signal.SIGSTOP)
            if _between_stages(db) >= 1:
                proc.kill()
                break
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    assert proc.wait(timeout=30) != 0, "the campaign ended before the kill"
    agents, stages = _read(db)
    killed_between = {aid for aid, a in agents.items() if a["status"] == "mutated" and stages[aid]}
    assert killed_between, "the kill must land between two stages of some child"
    before = {aid: list(stages[aid]) for aid in killed_between}

    resumed = subprocess.run([python, "-m", "openended", "resume", str(db), "--ray-address", ray_address,
                              "--quiet"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    agents, stages = _read(db)
    _check_cascade(agents, stages)  # each stage once: a finished stage was not run again
    for aid, rows in before.items():
        assert stages[aid][:len(rows)] == rows
    assert _store(db) == _store(ref)  # the same seed gives the same store, through the kill


def _write_task(tmp_path: Path, stages: str, extra: str = "") -> str:
    folder = tmp_path / "t"
    shutil.copytree(STAGED, folder)
    toml = folder / "task.toml"
    text = toml.read_text().split("# quick: min_fitness")[0]
    toml.write_text(text.replace('name = "staged"', f'name = "staged"\n{extra}') + stages)
    return str(folder)


@pytest.mark.parametrize(("stages", "extra", "words"), [
    ('[[stages]]\nname = "a"\nmin_fitnes = 1\n[[stages]]\nname = "b"\n', "",
     ["stages.0.min_fitnes", "unknown key", "min_fitness"]),
    ('[[stages]]\nname = "a"\n[[stages]]\nname = "a"\n', "", ["two stages are named 'a'"]),
    ('[[stages]]\nname = "a"\n[[stages]]\nname = "b"\nmin_fitness = 0\n', "", ["last stage", "no pass rule"]),
    ('[[stages]]\nname = "a"\nbeats = "grandparent"\n[[stages]]\nname = "b"\n', "", ["stages.0.beats"]),
    ('[[stages]]\nname = "a"\n[[stages]]\nname = "b"\n', "batchable = true", ["batchable must be false"]),
    ('[[stages]]\nname = "a"\ngateway = true\n[[stages]]\nname = "b"\n', "", ["gateway = true needs"]),
])
def test_bad_stages_are_refused_with_the_reason(tmp_path, stages, extra, words):
    with pytest.raises(TaskError) as info:
        load_task(_write_task(tmp_path, stages, extra))
    for word in words:
        assert word in str(info.value), str(info.value)


def test_stages_parse_with_their_defaults(tmp_path):
    task = load_task(_write_task(tmp_path, '[[stages]]\nname = "a"\nevaluate_args = { n = 1 }\nbeats = "parent"\n'
                                           '[[stages]]\nname = "b"\nlimits = { timeout_s = 5 }\n'))
    a, b = task.spec.stages
    assert (a.name, a.evaluate_args, a.beats, a.min_fitness, a.gateway) == ("a", {"n": 1}, "parent", None, None)
    assert b.limits.timeout_s == 5 and not task.spec.partial_is_final


def test_the_scripted_model_sees_only_children_that_passed(tmp_path, ray_address):
    # quick has no gateway; medium and full ask the model once: its log is one request per stage row
    from llm_fault_server import FaultServer, ok

    db = tmp_path / "g.db"
    with FaultServer(default=ok("noted", usage=(3, 1))) as server:
        _run(db, ray_address, task=staged("gateway"), budget=30, **{
            "sandbox.kind": "process",
            "llm.models": [{"name": "scripted", "base_url": server.base_url, "model": "fault-model",
                            "max_retries": 0, "timeout_s": 5.0, "max_total_s": 5.0}]})
        prompts = [r.prompt for r in server.requests]
    agents, stages = _read(db)
    _check_cascade(agents, stages)
    asked = sorted(p.split()[0] for p in prompts)
    rows = sorted(name for rows in stages.values() for name, _ in rows if name != "quick")
    assert asked == rows and "medium" in asked, (asked, rows)
    con = sqlite3.connect(db)
    try:  # a child stopped at quick asked nothing: no tokens on its row
        quick_only = con.execute("SELECT COUNT(*), SUM(tokens_in) FROM agents a WHERE NOT EXISTS (SELECT 1 FROM "
                                 "evaluations e WHERE e.agent_id = a.id AND e.stage != 'quick')").fetchone()
        tokens = con.execute("SELECT SUM(tokens_in) FROM agents").fetchone()[0]
    finally:
        con.close()
    assert quick_only[0] > 0 and not quick_only[1]
    assert tokens == 3 * len(prompts)  # every stage's model use lands on its child's row
