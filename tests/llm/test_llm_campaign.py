"""Foundation-model mutation inside real campaigns: a misbehaving OpenAI-compatible server (a real
local HTTP server), the embedded model, duplicate rejection, the operator portfolio, config errors."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_fault_server import FaultServer, empty, error, hang, malformed, ok, rate_limit, trickle

from archive_db import ArchiveDB
from openended import inspection
from openended.config import ConfigError, load_config
from openended.portfolio import Arm, Portfolio
from openended.status import campaign_status

KEY_ENV = "OPENENDED_FAULT_TEST_KEY"
# Continues the diff prompt of a chat model, which ends with an opened "<<<<<<< SEARCH" line
# (base models get the SEARCH text and the divider too, and write only the replacement).
GOOD_DIFF = ("    return -(bins - item)\n=======\n    return -(bins - item) + 0.5 * (bins == bins.max())\n"
             ">>>>>>> REPLACE\n")


def _config_toml(path: Path, db: Path, base_url: str, budget: int, **model) -> None:
    fields = {"name": "fault", "base_url": base_url, "model": "fault-model", "api_key_env": KEY_ENV,
              "api": "chat", "timeout_s": 1.5, "max_retries": 1, "max_total_s": 6.0, **model}
    body = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in fields.items())
    path.write_text("\n".join([
        'task = "binpack"', f'db = "{db}"', "max_in_flight = 1",
        "[sandbox]", 'kind = "inprocess"',
        "[mutation]", 'operator = "llm_diff"', "[llm]", "inspirations = 0", f"models = [ {{ {body} }} ]",
        "[budget]", f"max_children = {budget}",
    ]) + "\n")


def test_a_misbehaving_server_fails_children_with_reasons_and_the_campaign_goes_on(tmp_path, cli_env, python):
    key = "sk-fault-" + uuid.uuid4().hex
    script = [
        rate_limit(retry_after=1), ok(GOOD_DIFF),          # child 1: waits out the 429, then applies
        error(500), error(500),                            # child 2: 500 twice (max_retries 1)
        hang(30), hang(30),                                # child 3: no answer within timeout_s, twice
        malformed("no_divider"),                           # child 4: a SEARCH block without =======
        empty(),                                           # child 5: empty content
        trickle("slow " * 200, 0.05), trickle("slow " * 200, 0.05),  # child 6: tokens keep coming, too slowly
        ok(GOOD_DIFF),                                     # child 7: the same edit as child 1
    ]
    with FaultServer(script, default=empty()) as server:
        config = tmp_path / "campaign.toml"
        db = tmp_path / "fault.db"
        _config_toml(config, db, server.base_url, budget=9)
        started = time.monotonic()
        proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet"],
                              env={**cli_env, KEY_ENV: key}, capture_output=True, text=True, timeout=240)
        seconds = time.monotonic() - started
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 1 s Retry-After, 2 x 1.5 s hang, 2 x 1.5 s trickle, backoffs, Ray's start: well under a minute.
    assert seconds < 90

    with ArchiveDB(db, readonly=True) as store:
        rows = {a["id"]: a for a in (store.agent(i) for i in range(9))}
        evaluated = {e for e in range(9) if store.evaluations(e)} | {
            r[0] for r in store.conn.execute("SELECT id FROM agents WHERE eval_seconds IS NOT NULL")}
        assert rows[0]["status"] == "archived"
        assert rows[1]["status"] in ("archived", "rejected") and rows[1]["model"] == "fault"
        assert "0.5 * (bins == bins.max())" in inspection.diff(store, 1)["text"]
        expect = {2: "500", 3: "timed out", 4: "=======", 5: "empty completion", 6: "timed out"}
        for agent_id, word in expect.items():
            row = rows[agent_id]
            assert (row["status"], row["fail_stage"]) == ("failed", "mutation"), row
            assert word in row["fail_reason"], (agent_id, row["fail_reason"])
        # The reason of a parent's last failed child is fed back into its next prompt (whichever of the
        # two archived agents the later children came from: both have failed children by then).
        fed = [r.prompt for r in requests[8:] if "The previous attempt to change this program failed:" in r.prompt]
        assert fed, "a later prompt shows a previous failure"
        reasons = [rows[i]["fail_reason"][:40] for i in expect]
        assert all("Retry" not in prompt and any(reason in prompt for reason in reasons) for prompt in fed)
        # Child 7 repeats child 1's genome: not evaluated again, it points at child 1.
        assert rows[7]["duplicate_of"] == 1 and rows[7]["genome_hash"] == rows[1]["genome_hash"]
        assert rows[7]["fitness"] == rows[1]["fitness"] and 7 not in evaluated and 1 in evaluated
        assert rows[1]["tokens_out"] > 0 and sum(r["tokens_in"] for r in rows.values()) > 0

    # The key reached the server, and nothing else: not the database, not the output.
    assert all(r.headers.get("authorization") == f"Bearer {key}" for r in requests)
    assert key.encode() not in db.read_bytes()
    wal = Path(f"{db}-wal")
    assert not wal.exists() or key.encode() not in wal.read_bytes()
    assert key not in proc.stdout + proc.stderr
    conn = sqlite3.connect(db)
    assert key not in "\n".join(conn.iterdump())
    conn.close()


def test_token_budget_stops_a_campaign(tmp_path, cli_env, python):
    with FaultServer([], default=ok(GOOD_DIFF, usage=(400, 100))) as server:
        config = tmp_path / "campaign.toml"
        db = tmp_path / "tokens.db"
        _config_toml(config, db, server.base_url, budget=500)
        proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet", "--max-tokens", "1200"],
                              env={**cli_env, KEY_ENV: "k"}, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "token budget" in proc.stdout
    with ArchiveDB(db, readonly=True) as store:
        assert 1200 <= store.usage_totals()["tokens"] < 1200 + 500
        assert store.next_agent_id() < 10


def test_llm_operators_need_a_model_and_a_code_genome(tmp_path):
    from openended.engine import Campaign

    with pytest.raises(ConfigError, match="need a model"):
        Campaign(load_config(None, {"task": "binpack", "db": str(tmp_path / "a.db"), "mutation.operator": "llm_diff"}))
    with pytest.raises(ConfigError, match="parameter|params genome"):
        Campaign(load_config(None, {"task": "maze-medium", "db": str(tmp_path / "b.db"), "mutation.operator": "ast"}))
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "b.db").exists(), "no file for a refused campaign"


def test_portfolio_prefers_the_arm_whose_children_enter_the_archive():
    portfolio = Portfolio([Arm("llm_diff", "a"), Arm("llm_diff", "b"), Arm("ast")], explore=0.0)
    rng = np.random.default_rng(0)
    truth = {"llm_diff@a": 0.05, "llm_diff@b": 0.6, "ast": 0.2}
    picks = []
    for _ in range(600):
        arm = portfolio.choose(rng)
        picks.append(arm.label)
        portfolio.update(arm, rng.random() < truth[arm.label])
    assert picks[-200:].count("llm_diff@b") > 140


def test_a_pick_that_makes_a_group_of_children_counts_as_one_trial():
    # tune's pick makes 8 children: counted child by child at the same success rate as llm_diff's single
    # children, it would look 8 times surer and take nearly every pick (and nearly every child)
    def tune_share(children_per_pick):
        portfolio = Portfolio([Arm("llm_diff", "m"), Arm("tune")], explore=0.0, children_per_pick=children_per_pick)
        rng = np.random.default_rng(1)
        picks = []
        for _ in range(400):
            arm = portfolio.choose(rng)
            picks.append(arm.operator)
            for _ in range(8 if arm.operator == "tune" else 1):
                portfolio.update(arm, rng.random() < 0.6)
        return picks.count("tune") / len(picks)

    assert 0.25 < tune_share({"tune": 8}) < 0.75
    assert tune_share({}) > 0.75


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=60))
def test_portfolio_restored_from_store_counts_equals_the_live_one(events):
    arms = [Arm("llm_diff", "m"), Arm("tune"), Arm("ast")]
    live = Portfolio(arms, children_per_pick={"tune": 6})
    rows: dict = {}
    for i, archived in events:
        live.update(arms[i], archived)
        row = rows.setdefault(arms[i], {"operator": arms[i].operator, "model": arms[i].model or "none",
                                        "finished": 0, "archived": 0})
        row["finished"] += 1
        row["archived"] += archived
    restored = Portfolio(arms, children_per_pick={"tune": 6})
    restored.restore(list(rows.values()))
    assert restored.shares() == live.shares()
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert [live.choose(a) for _ in range(20)] == [restored.choose(b) for _ in range(20)]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=40), st.integers(0, 2**32 - 1))
def test_an_arm_left_out_is_never_chosen_and_the_others_are_chosen_as_before(events, seed):
    arms = [Arm("llm_diff", "m"), Arm("tune"), Arm("ast")]
    portfolio = Portfolio(arms, explore=0.3)
    for i, archived in events:
        portfolio.update(arms[i], archived)
    a, b, c = (np.random.default_rng(seed) for _ in range(3))
    assert all(portfolio.choose(a, without="tune").operator != "tune" for _ in range(30))
    # leaving out an operator the portfolio does not hold changes nothing, draw for draw
    assert [portfolio.choose(b, without="gaussian") for _ in range(30)] == [portfolio.choose(c) for _ in range(30)]
    with pytest.raises(ValueError, match="no operator but 'ast'"):
        Portfolio([Arm("ast")]).choose(a, without="ast")


def test_beside_a_hosted_model_the_embedded_one_gets_no_whole_program_arms():
    operators = ["llm_diff", "llm_rewrite", "llm_crossover", "ast"]
    both = Portfolio.build(operators, ["local", "hosted"], edits_only=frozenset({"local"}))
    assert [arm.label for arm in both.arms] == ["llm_diff@local", "llm_diff@hosted", "llm_rewrite@hosted",
                                                "llm_crossover@hosted", "ast"]
    alone = Portfolio.build(operators, ["local"], edits_only=frozenset({"local"}))  # asked for: it gets them
    assert [arm.label for arm in alone.arms] == ["llm_diff@local", "llm_rewrite@local", "llm_crossover@local", "ast"]


def test_embedded_model_binpack_campaign(tmp_path, cli_env, python, docker_engine, embedded_model):
    db = tmp_path / "local.db"
    # llm_diff alone: about 14 proposals before the token budget, each applying about half the time.
    proc = subprocess.run([python, "-m", "openended", "run", "--task", "binpack", "--llm", "local", "--db", str(db),
                           "--operator", "llm_diff", "--budget", "200", "--max-tokens", "10000", "--quiet"],
                          env=cli_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "token budget" in proc.stdout, proc.stdout[-1000:]
    with ArchiveDB(db, readonly=True) as store:
        llm_children = [store.agent(r[0]) for r in store.conn.execute(
            "SELECT id FROM agents WHERE model = 'local-gemma3-270m'").fetchall()]
        asked = [c for c in llm_children if c["status"] != "proposed"]  # proposed: waiting when the budget ran out
        assert asked and all(c["tokens_in"] > 0 for c in asked)
        assert 10000 <= store.usage_totals()["tokens"]
        made = [c for c in llm_children if c["genome_hash"] is not None]
        assert made, "the model made at least one usable child"
        for child in made:
            assert child["genome_hash"] != store.agent(child["parent_id"])["genome_hash"]
            assert inspection.diff(store, child["id"])["text"].strip(), "its code differs from its parent's"
        diffs = [c for c in made if c["operator"] == "llm_diff"]
        assert diffs, "at least one SEARCH/REPLACE edit applied cleanly"
        # Evaluated in the Docker sandbox.
        assert store.evaluations(diffs[0]["id"]) or diffs[0]["duplicate_of"] is not None


def test_model_settings_are_checked_before_any_file_is_made(tmp_path, monkeypatch):
    from openended.engine import Campaign

    model = {"name": "m", "base_url": "http://127.0.0.1:9/v1", "model": "x", "api_key_env": "OPENENDED_UNSET_KEY"}
    monkeypatch.delenv("OPENENDED_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"llm.models\[0\].api_key_env.*OPENENDED_UNSET_KEY.*not set"):
        Campaign(load_config(None, {"task": "binpack", "db": str(tmp_path / "k.db"), "llm.models": [model]}))
    with pytest.raises(ConfigError, match="llm.models.0.base_url"):
        load_config(None, {"llm.models": [{**model, "base_url": "localhost:11434/v1"}]})
    assert not (tmp_path / "k.db").exists()


def test_auto_sandbox_never_falls_back_to_process_while_keys_are_in_the_environment(tmp_path, monkeypatch):
    from openended.engine import Campaign

    monkeypatch.setenv("OPENENDED_SET_KEY", "sk-x")
    model = {"name": "m", "base_url": "http://127.0.0.1:9/v1", "model": "x", "api_key_env": "OPENENDED_SET_KEY"}
    base = {"task": "binpack", "db": str(tmp_path / "s.db"), "llm.models": [model],
            "sandbox.image": "openended-no-such-image:0"}
    with pytest.raises(ConfigError, match="API keys.*sandbox.kind = 'process'"):
        Campaign(load_config(None, base))
    campaign = Campaign(load_config(None, {**base, "db": str(tmp_path / "p.db"), "sandbox.kind": "process"}))
    assert campaign.sandbox.kind == "process" and "does NOT isolate" in campaign.sandbox_note
    campaign.close()


@pytest.mark.parametrize("reason, evaluated_again", [("worker failed: the actor died", True),
                                                     ("crash: evaluation exited with status 1: boom", False)])
def test_a_duplicate_inherits_the_genome_s_failures_but_not_the_machinery_s(tmp_path, reason, evaluated_again):
    from archive_db import Outcome, Proposal
    from openended.engine import Campaign
    from openended.tasks import load_task

    # the free mode: a duplicate is settled as soon as it is known (the reproducible mode waits for its turn)
    cfg = load_config(None, {"task": "binpack", "db": str(tmp_path / "d.db"), "mutation.operator": "ast",
                             "sandbox.kind": "inprocess", "deterministic": False})
    campaign = Campaign(cfg)
    seed = load_task("binpack").seed_files()
    child = {"priority.py": seed["priority.py"] + b"\nEDITED = 1\n"}  # a comment alone: a duplicate of the seed
    db = campaign.db
    db.propose([Proposal(0, None, "seed", 1), Proposal(1, 0, "ast", 2), Proposal(2, 0, "ast", 3)])
    db.record([Outcome(0, "archived", files=seed, fitness=-4.5, descriptors=[1.0, 0.0]),
               Outcome(1, "mutated", files=child), Outcome(2, "mutated", files=child)])
    db.record([Outcome(1, "failed", fail_stage="sandbox", fail_reason=reason)])
    campaign.close()

    resumed = Campaign(load_config(None, {"db": str(tmp_path / "d.db")}), resume_only=True)
    row = resumed.db.agent(2)
    # Agent 1 failed for good; agent 2 is the only child that can be left to dispatch.
    if evaluated_again:
        assert row["status"] == "mutated" and resumed.resumed_pending == 1 and row["duplicate_of"] is None
    else:
        assert row["status"] == "failed" and row["duplicate_of"] == 1 and resumed.resumed_pending == 0
        assert "duplicate of agent 1" in row["fail_reason"]
    resumed.close()


def _model_children(db: Path) -> int:
    """Children whose model call came back (tokens counted), read while the campaign writes."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM agents WHERE tokens_out > 0").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_a_campaign_whose_model_server_crashes_stops_and_resumes(tmp_path, cli_env, python, embedded_model):
    db, log = tmp_path / "crash.db", tmp_path / "run.log"
    command = [python, "-m", "openended", "run", "--task", "binpack", "--llm", "local", "--db", str(db),
               "--operator", "llm_diff", "--sandbox", "process", "--quiet"]
    with open(log, "w") as out:
        proc = subprocess.Popen([*command, "--budget", "400"], env=cli_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _model_children(db) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        found = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "llama_cpp.server"], capture_output=True, text=True)
        assert found.stdout.split(), f"no model server under the campaign: {proc.poll()}"
        os.kill(int(found.stdout.split()[0]), signal.SIGSEGV)  # what a crash of llama.cpp looks like from outside
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    kept = re.search(r"; log (\S+)\)", text)  # the crashed server's log, kept for the user
    if kept:
        Path(kept.group(1)).unlink(missing_ok=True)
    assert proc.returncode == 1, text[-3000:]
    assert "stopped (the embedded model's server ended: it was killed by SIGSEGV" in text, text[-3000:]
    assert kept, text[-3000:]
    with ArchiveDB(db, readonly=True) as store:
        assert store.get_run()["status"] == "stopped"
        total = store.conn.execute("SELECT COUNT(*) FROM agents").fetchone()[0]
        dead_server = store.conn.execute("SELECT COUNT(*) FROM agents WHERE fail_reason LIKE 'model %: connection %' "
                                         "OR fail_reason LIKE 'model %: unexpected response%'").fetchone()[0]
        answered = store.conn.execute("SELECT COUNT(*) FROM agents WHERE tokens_out > 0").fetchone()[0]
        out_at_once = store.get_run()["config"]["staleness"]  # the most children out at a time
    assert "killed by SIGSEGV" in campaign_status(db).stop_reason  # `openended status` says why it stopped
    # It stopped at the crash: at most the children already out met the dead server, not the rest of the budget.
    assert total < 400 and dead_server <= out_at_once
    # Resumed, the server starts again and the model answers again.
    again = subprocess.run([*command, "--budget", str(total + 4)], env=cli_env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert _model_children(db) > answered
