"""``self_improve`` on the coding-agent task, as the Darwin Gödel Machine does it, with a scripted model:
the diagnosis names a change to the agent's prompt, the parent agent makes that change to its own files in a
sandbox, and a child that gained the capability scores strictly higher than its parent; children that did
not stop at the cascade's first stage."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess

from conftest import containers_left
from llm_fault_server import FaultServer, ok, respond

from archive_db import ArchiveDB
from openended.sandbox import campaign_label
from openended.tasks.humaneval import read_package_data

CANONICAL = {row["entry_point"]: row for row in read_package_data()}
CAPABLE = "Think step by step."  # in the agent's prompt: the model solves two of the first three problems
HASTY = "Answer fast."  # in the agent's prompt: it solves none


def _model(request):
    prompt = request.prompt
    if "Here is a coding agent." in prompt:  # the diagnosis (the driver's side): by the child's seed
        seed = int((request.body or {}).get("seed", 0))
        line = CAPABLE if seed % 2 == 0 else HASTY
        return ok(f"Add the line '{line}' at the top of prompt.txt.", usage=(300, 20))
    history = prompt.rsplit("Actions (reply with exactly one):", 1)[1]
    if "\nAction: " in history or history.startswith("Action: "):
        return ok("DONE", usage=(50, 1))
    if "Improve this coding agent" in prompt:  # the self-edit: the parent agent rewrites its own prompt.txt
        line = re.search(r"Add the line '([^']+)' at the top of prompt.txt", prompt).group(1)
        shown = prompt.split("--- prompt.txt ---\n", 1)[1].split("\n--- end of prompt.txt ---", 1)[0]
        return ok(f"WRITE prompt.txt\n{line}\n{shown}\nEND_OF_FILE", usage=(200, 40))
    entry = prompt.split("Complete the function `", 1)[1].split("`", 1)[0]
    row = CANONICAL[entry]
    solved = {"specialFilter"} | ({"fruit_distribution"} if CAPABLE in prompt else set())
    if HASTY in prompt:
        solved = set()
    body = row["canonical_solution"] if entry in solved else "    return None\n"
    return ok(f"WRITE solution.py\n{row['prompt']}{body}END_OF_FILE", usage=(100, 20))


def test_a_child_that_improved_itself_scores_higher_and_bad_children_stop_early(tmp_path, cli_env, python,
                                                                              docker_engine):
    db = tmp_path / "dgm.db"
    with FaultServer(default=respond(_model)) as server:
        proc = subprocess.run([python, *_campaign(tmp_path, db, server.base_url, budget=6)], env=cli_env,
                              capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = sqlite3.connect(db)
    try:
        agents = {row[0]: row[1:] for row in con.execute(
            "SELECT id, parent_id, operator, status, fitness, fail_reason, tokens_in FROM agents "
            "WHERE duplicate_of IS NULL ORDER BY id")}  # a duplicate of an earlier child is not evaluated again
        stages = {}
        for agent_id, stage in con.execute("SELECT agent_id, stage FROM evaluations ORDER BY id"):
            stages.setdefault(agent_id, []).append(stage)
    finally:
        con.close()
    with ArchiveDB(db, readonly=True) as store:
        prompts = {i: store.agent_files(i).get("prompt.txt", b"").decode() for i in agents
                   if agents[i][2] in ("archived", "rejected")}
    capable = [i for i, text in prompts.items() if agents[i][1] == "self_improve" and text.startswith(CAPABLE)]
    hasty = [i for i, text in prompts.items() if agents[i][1] == "self_improve" and text.startswith(HASTY)]
    assert capable and hasty, (agents, stages)
    for i in capable:
        parent, _, status, fitness, _, tokens_in = agents[i]
        assert stages[i] == ["quick", "medium", "full"] and fitness > agents[parent][3], (i, agents)
        assert tokens_in >= 300 + 200, agents[i]  # the diagnosis and the self-edit run are the child's
    for i in hasty:  # solved nothing on the quick stage: no medium or full run
        assert stages[i] == ["quick"] and agents[i][2] == "rejected", (i, agents[i], stages.get(i))
    # the self-edit's diff is that change: one line added at the top of prompt.txt
    child = capable[0]
    diff = subprocess.run([python, "-m", "openended", "diff", str(db), str(agents[child][0]), str(child)],
                          env=cli_env, capture_output=True, text=True)
    assert diff.returncode == 0, diff.stderr
    changed = [line for line in diff.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == [f"+{CAPABLE}"], diff.stdout
    # lineage shows each self-modification with the diagnosis it carried out
    shown = subprocess.run([python, "-m", "openended", "lineage", str(db), str(child)], env=cli_env,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "self-modifications" in shown.stdout and f"Add the line '{CAPABLE}'" in shown.stdout, shown.stdout
    steps = json.loads(subprocess.run([python, "-m", "openended", "lineage", str(db), str(child), "--json"],
                                      env=cli_env, capture_output=True, text=True, check=True).stdout)
    assert [s["diagnosis"] is not None for s in steps] == [False, True], steps
    # the best lineage exported as git: the agent's code history, each self-modification with its diagnosis
    repo = tmp_path / "history"
    exported = subprocess.run([python, "-m", "openended", "export", str(db), str(child), "--git", str(repo)],
                              env=cli_env, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    log = subprocess.run(["git", "-C", str(repo), "log", "-p", "--format=%B"], capture_output=True, text=True,
                         check=True).stdout
    assert f"Diagnosis: Add the line '{CAPABLE}'" in log and f"+{CAPABLE}" in log, log[:3000]


def test_no_selfimprove_the_seed_agent_makes_every_change(tmp_path, cli_env, python, docker_engine):
    """The DGM's no_selfimprove comparison: the seed agent edits each parent's files, so a parent that gained
    the capability does not carry it into how it edits (with `latest`, each child extends the newest)."""
    edits: list[str] = []

    def model(request):
        if "Improve this coding agent" in request.prompt and "\nAction: " not in request.prompt:
            edits.append(request.prompt)
        return _model(request)

    db = tmp_path / "fixed.db"
    with FaultServer(default=respond(model)) as server:
        proc = subprocess.run([python, *_campaign(tmp_path, db, server.base_url, budget=6), "--dgm", "no_selfimprove",
                               "--selection", "latest"], env=cli_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert edits, "no self-edit reached the model"
    # every edit was made by the seed's prompt, even of a parent whose own prompt starts with the capability
    assert all(prompt.startswith("You are a careful Python programmer.") for prompt in edits), edits[0][:200]
    assert any(f"--- prompt.txt ---\n{CAPABLE}" in prompt for prompt in edits), "no capable parent was edited"
    con = sqlite3.connect(db)
    try:
        config = json.loads(con.execute("SELECT config FROM runs").fetchone()[0])
    finally:
        con.close()
    assert config["mutation"]["params"] == {"timeout_s": 60, "editor": "seed"}
    assert config["selection"]["strategy"] == "latest" and config["archive"]["kind"] == "all"


def _campaign(tmp_path, db, base_url: str, *, ray_address: str | None = None, budget: int = 4) -> list[str]:
    """The command line of a self_improve campaign on coding-agent-tiny in Docker, asking ``base_url``."""
    config = tmp_path / f"{db.stem}.toml"
    config.write_text("\n".join([
        'task = "coding-agent-tiny"', f'db = "{db}"', "max_in_flight = 1", "seed = 1",
        *([f'ray_address = "{ray_address}"'] if ray_address else []),
        "[sandbox]", 'kind = "docker"', 'mode = "pool"',
        "[mutation]", 'operator = "self_improve"', "params = { timeout_s = 60 }",
        "[llm]", f'models = [ {{ name = "scripted", base_url = "{base_url}", model = "fault-model", '
                 'api = "completion", max_retries = 0, timeout_s = 30.0, max_total_s = 30.0 } ]',
        "[budget]", f"max_children = {budget}",
    ]) + "\n")
    return ["-m", "openended", "run", str(config), "--quiet"]


def _store(db) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, parent_id, seed, operator, status, genome_hash, fitness, fail_reason, "
                           "tokens_in, tokens_out FROM agents ORDER BY id").fetchall()
    finally:
        con.close()


def test_kill_9_during_a_self_edit_then_resume(tmp_path, cli_env, python, docker_engine, ray_address):
    import os
    import signal
    import threading
    import time

    hold, seen = threading.Event(), threading.Event()

    def model(request):
        if "Improve this coding agent" in request.prompt and hold.is_set():
            seen.set()
            hold.wait(30)  # the self-edit hangs on its model call until the driver is killed
        return _model(request)

    with FaultServer(default=respond(model)) as server:
        ref = tmp_path / "ref.db"
        command = _campaign(tmp_path, ref, server.base_url, ray_address=ray_address)
        done = subprocess.run([python, *command], env=cli_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        db = tmp_path / "killed.db"
        hold.set()
        command = _campaign(tmp_path, db, server.base_url, ray_address=ray_address)
        proc = subprocess.Popen([python, *command], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert seen.wait(300), "no self-edit reached the model"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        hold.clear()
        time.sleep(0.5)
        killed = {row[0]: row for row in _store(db)}
        assert any(row[4] == "proposed" and row[3] == "self_improve" for row in killed.values()), killed
        resumed = subprocess.run([python, "-m", "openended", "resume", str(db), "--ray-address", ray_address,
                                  "--quiet"], env=cli_env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # the child in its self-edit at the kill was made again from its recorded seed; nothing was counted twice
    assert _store(db) == _store(ref)
    assert containers_left(campaign_label(db)) == []
