"""The built-in coding-agent task: an agent (a folder of Python files) edits a workspace per HumanEval
problem using a model through the gateway; the scorer, in a sandbox of its own, runs the hidden tests.
With a scripted model: the right stage rows and fitness, the hidden tests out of the agent's reach, a fake
test the agent writes gaining nothing, every token on the child's row, and no container left behind."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
from conftest import containers_left
from llm_fault_server import FaultServer, ok, respond

from openended.sandbox import campaign_label
from openended.tasks import load_task
from openended.tasks.humaneval import TASK_DIR, jsonl, read_package_data, split

CANONICAL = {row["entry_point"]: row for row in read_package_data()}


def _answer(request):
    """The scripted model: solves specialFilter, gets fruit_distribution wrong, and on pluck first looks for
    the hidden tests, then writes a test of its own that passes, then a wrong solution."""
    prompt = request.prompt
    entry = prompt.split("Complete the function `", 1)[1].split("`", 1)[0]
    history = prompt.rsplit("Actions (reply with exactly one):", 1)[1]
    steps = history.count("\nAction: ") + history.startswith("Action: ")
    row = CANONICAL[entry]
    if "\nAction: DONE" in history or steps >= 3:
        return ok("DONE", usage=(50, 1))
    if entry == "specialFilter":
        text = f"WRITE solution.py\n{row['prompt']}{row['canonical_solution']}END_OF_FILE" if steps == 0 else "DONE"
    elif entry == "fruit_distribution":
        text = f"WRITE solution.py\n{row['prompt']}    return -1\nEND_OF_FILE" if steps == 0 else "DONE"
    else:
        text = ["RUN ls /task; cat /task/scorer/tests.jsonl; ls -R / 2>/dev/null | grep -c tests.jsonl",
                "WRITE test_solution.py\ndef test_pluck():\n    assert True\nEND_OF_FILE",
                f"WRITE solution.py\n{row['prompt']}    return []\nEND_OF_FILE"][steps]
    return ok(text, usage=(100, 20))


def test_the_problem_files_are_humaneval_in_the_fixed_order():
    visible, hidden = split(read_package_data())
    assert (TASK_DIR / "problems.jsonl").read_text() == jsonl(visible)
    assert (TASK_DIR / "scorer" / "tests.jsonl").read_text() == jsonl(hidden)
    assert len(visible) == 164 and len({v["id"] for v in visible}) == 164
    task = load_task("coding-agent")
    assert (task.name, task.hidden_folders) == ("coding-agent-dgm", ("scorer",))
    assert [s.evaluate_args["problems"] for s in task.spec.stages] == [10, 50, 164]


def test_a_coding_agent_campaign_with_a_scripted_model(tmp_path, cli_env, python, docker_engine):
    db = tmp_path / "agents.db"
    config = tmp_path / "campaign.toml"
    with FaultServer(default=respond(_answer)) as server:
        config.write_text("\n".join([
            'task = "coding-agent-tiny"', f'db = "{db}"', "max_in_flight = 1",
            "[sandbox]", 'kind = "docker"', 'mode = "pool"',
            "[mutation]", 'operator = "ast"',
            "[llm]", f'models = [ {{ name = "scripted", base_url = "{server.base_url}", model = "fault-model", '
                     'api = "completion", max_retries = 0, timeout_s = 10.0, max_total_s = 10.0 } ]',
            "[budget]", "max_children = 1",
        ]) + "\n")
        proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet"], env=cli_env,
                              capture_output=True, text=True, timeout=600)
        requests = len(server.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = sqlite3.connect(db)
    try:
        status, fitness, metrics, feedback, tokens_in, tokens_out, descriptors = con.execute(
            "SELECT status, fitness, metrics, feedback, tokens_in, tokens_out, descriptors FROM agents "
            "WHERE id = 0").fetchone()
        stages = con.execute("SELECT stage, fitness FROM evaluations WHERE agent_id = 0 ORDER BY id").fetchall()
    finally:
        con.close()
    # the seed (a root) runs every stage: 1 problem (solved), 2 (one of two), 3 (one of three)
    assert stages == [("quick", 1.0), ("medium", 0.5), ("full", pytest.approx(1 / 3))], stages
    assert (status, fitness) == ("archived", pytest.approx(1 / 3))
    metrics = json.loads(metrics)
    assert metrics["failed"] == ["HumanEval/67", "HumanEval/68"] and metrics["stage_reached"] == "full"
    assert feedback.startswith("solved 1 of 3; failed: HumanEval/67: verify raised AssertionError")
    # from its stage the agent found no hidden tests (the task folder without scorer/, none anywhere else),
    # and the test it wrote in its workspace counted for nothing
    assert "evaluate.py\nproblems.jsonl\nprompt.md\nseed\ntask.toml\n0\n" in feedback
    assert "cat: /task/scorer/tests.jsonl: No such file or directory" in feedback
    assert "wrote test_solution.py" in feedback
    # every call in every stage is on the row: quick 2 calls, medium 4, full 8; the descriptors are the
    # gateway's counts for the last stage (per problem: 240, 240 and 411 tokens; 2, 2 and 4 calls)
    assert requests == 14
    assert (tokens_in, tokens_out) == (200 + 400 + 750, 40 + 80 + 141)
    assert json.loads(descriptors) == [pytest.approx(891 / 3), pytest.approx(8 / 3)]
    assert containers_left(campaign_label(db)) == []


def test_a_short_coding_agent_campaign_with_the_embedded_gemma(tmp_path, cli_env, python, docker_engine,
                                                               embedded_model):
    """Whatever it scores: the cascade runs, the scorer scores, a self_improve child is made (or fails with
    its reason), every child's tokens are recorded, and no container is left behind. The model is the
    embedded Gemma 3 270M (a base model; it rarely solves any problem)."""
    db = tmp_path / "gemma.db"
    config = tmp_path / "campaign.toml"
    config.write_text("\n".join([
        'task = "coding-agent-tiny"', f'db = "{db}"', "max_in_flight = 1",
        "[sandbox]", 'kind = "docker"',
        "[mutation]", 'operator = "self_improve"', "params = { timeout_s = 120, diagnosis_tokens = 100 }",
        "[llm]", "local = true",
        "[gateway]", "max_tokens_per_child = 600",  # per evaluation: about one model call a stage, on 2 cores
        "[budget]", "max_children = 2",
    ]) + "\n")
    proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet"], env=cli_env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = sqlite3.connect(db)
    try:
        agents = con.execute("SELECT id, status, fail_stage, fitness, tokens_in, tokens_out FROM agents "
                             "ORDER BY id").fetchall()
        stages = con.execute("SELECT agent_id, stage FROM evaluations ORDER BY id").fetchall()
        spent = dict(con.execute("SELECT agent_id, SUM(tokens_in + tokens_out) FROM transcripts GROUP BY agent_id"))
    finally:
        con.close()
    assert len(agents) == 2 and agents[0][1] == "archived", agents
    child = agents[1]
    assert child[4] > 0, child  # its diagnosis was asked for, and is on its row
    assert [s for a, s in stages if a == 0] == ["quick", "medium", "full"]  # the seed runs the whole cascade
    for agent_id, status, fail_stage, fitness, tokens_in, tokens_out in agents:
        assert status in ("archived", "rejected", "failed"), agents
        if fail_stage is None:
            assert 0.0 <= fitness <= 1.0
        # a child's row holds its mutation's tokens and, at least, every gateway call its stages made
        assert tokens_in + tokens_out >= spent.get(agent_id, 0) and (agent_id != 0 or spent[0] > 0), agents
    assert containers_left(campaign_label(db)) == []
