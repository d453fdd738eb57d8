"""A scorer stage: the agent acts in a sandbox with the model gateway and hands on its outputs; a fresh
sandbox of the task's scorer folder, without the gateway, scores them against hidden answers. The agent
cannot see the hidden files, and only the scorer's result counts (not what the acting side claims)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st
from llm_fault_server import FaultServer, ok, respond

from openended.config import load_config
from openended.engine import Campaign
from openended.results import InvalidResult, check_acting
from openended.sandbox.engine import copy_task
from openended.tasks import TaskError, load_task

SCORED = ROOT / "tests" / "tasks" / "scored"


def _sums(request):
    a, _, b = request.prompt.rstrip(" =").partition(" + ")
    total = int(a) + int(b)
    return ok(str(total - 1 if total == 14 else total), usage=(7, 2))  # wrong on 7 + 7: two of three right


def _campaign(tmp_path: Path, ray_address: str, variant: str, server: FaultServer) -> Path:
    db = tmp_path / f"{variant}.db"
    overrides = {"task": f"{SCORED}:{variant}", "db": str(db), "seed": 3, "budget.max_children": 1,
                 "sandbox.kind": "docker", "sandbox.mode": "pool", "max_in_flight": 1, "ray_address": ray_address,
                 "mutation.operator": "ast", "stats_every_seconds": 60.0,
                 "llm.models": [{"name": "scripted", "base_url": server.base_url, "model": "fault-model",
                                 "max_retries": 0, "timeout_s": 5.0, "max_total_s": 5.0}]}
    summary = Campaign(load_config(None, overrides)).run()
    assert summary.status == "finished", summary
    return db


def _rows(db: Path, query: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_the_agent_cannot_read_the_hidden_answers_and_only_the_scorer_scores(tmp_path, ray_address, docker_engine):
    with FaultServer(default=respond(_sums)) as server:
        db = _campaign(tmp_path, ray_address, "plain", server)
        asked = [r.prompt for r in server.requests]
    assert asked == ["2 + 3 =", "10 + 5 =", "7 + 7 ="]  # the agent acted, through the gateway
    ((status, fitness, metrics, feedback, tokens_in),) = _rows(
        db, "SELECT status, fitness, metrics, feedback, tokens_in FROM agents WHERE id = 0")
    metrics = json.loads(metrics)
    # the scorer's score: two of three against its hidden answers, not the acting side's claimed 1.0
    assert (status, fitness, metrics["right"]) == ("archived", pytest.approx(2 / 3), 2)
    assert feedback.startswith("2 of 3 right") and "acted on 3 problems" in feedback
    assert metrics["acted"] is True and metrics["stage_reached"] == "solve"
    assert metrics["outputs"] == ["answers.json", "probe.json", "score.json"]
    probe = metrics["probe"]
    assert "evaluate.py" in probe["task"] and "scorer" not in probe["task"]  # it saw the task folder, not the scorer
    assert probe["hidden"] == [] and probe["read"] == "FileNotFoundError"
    # the scorer ran without the gateway, beside its hidden file
    assert (metrics["scorer_socket"], metrics["scorer_gateway"]) == (False, False)
    assert metrics["scorer_files"] == ["evaluate.py", "expected.json"]
    assert tokens_in == 3 * 7  # the acting stage's model use is on the child's row
    ((stage, row_fitness),) = _rows(db, "SELECT stage, fitness FROM evaluations WHERE agent_id = 0")
    assert (stage, row_fitness) == ("solve", pytest.approx(2 / 3))


def test_a_hostile_acting_result_fails_its_child_with_the_reason(tmp_path, ray_address, docker_engine):
    # an output named out of the agent's folder: the child fails as invalid, with the reason
    with FaultServer(default=respond(_sums)) as server:
        db = _campaign(tmp_path, ray_address, "hostile", server)
    ((status, stage, reason),) = _rows(db, "SELECT status, fail_stage, fail_reason FROM agents")
    assert (status, stage) == ("failed", "invalid")
    assert reason.startswith("bad_result: the acting result's output file name '../escape.txt'"), reason


def test_scorer_folders_are_checked_and_kept_out_of_the_agent_copy(tmp_path):
    task = tmp_path / "t"
    (task / "seed").mkdir(parents=True)
    (task / "seed" / "main.py").write_text("x = 1\n")
    (task / "evaluate.py").write_text("")
    (task / "deep" / "scorer").mkdir(parents=True)
    (task / "deep" / "scorer" / "evaluate.py").write_text("")
    (task / "deep" / "kept.txt").write_text("")
    toml = 'name = "t"\n[[stages]]\nname = "s"\nscorer = "{}"\n'
    (task / "task.toml").write_text(toml.format("deep/scorer"))
    assert load_task(str(task)).hidden_folders == ("deep/scorer",)
    copy_task(task, tmp_path / "copy", ("deep/scorer",))
    assert sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*")) == [
        "deep", "deep/kept.txt", "evaluate.py", "seed", "seed/main.py", "task.toml"]
    for bad, words in [("missing", "does not exist"), ("../up", "inside the task folder"), ("seed", "seed/")]:
        (task / "task.toml").write_text(toml.format(bad))
        with pytest.raises(TaskError, match="scorer") as err:
            load_task(str(task))
        assert words in str(err.value)


_text = st.text(max_size=20)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _text,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)


@given(st.dictionaries(st.sampled_from(["outputs", "metrics", "feedback", "valid", "fitness"]), _json)
       | st.fixed_dictionaries({"outputs": st.dictionaries(_text, _json | _text, max_size=4)}) | _json)
def test_any_acting_result_is_either_checked_or_refused_with_the_reason(result):
    try:
        acted = check_acting(result)
    except InvalidResult as exc:
        assert str(exc)
        return
    assert isinstance(result, dict) and result.get("valid", True) is True
    assert acted.outputs == {k: v.encode() for k, v in result["outputs"].items()}
