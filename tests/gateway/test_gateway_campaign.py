"""A campaign whose agents call a model (task.toml `gateway = true`): through the CLI, in Docker, with a
scripted upstream. Each child's tokens land on its own row and its transcript in the store; a per-child
limit is recorded; the key set in the driver's environment reaches only the upstream's Authorization header."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from llm_fault_server import FaultServer, ok, respond

from archive_db import ArchiveDB

GWTASK = Path(__file__).resolve().parent / "gwtask"


def test_a_campaign_whose_agents_call_a_model_through_the_gateway(tmp_path, cli_env, python, docker_engine):
    key = "sk-fake-campaign-" + uuid.uuid4().hex
    db = tmp_path / "gw.db"
    config = tmp_path / "campaign.toml"
    with FaultServer(default=respond(lambda request: ok(f"answer to {request.prompt}", usage=(10, 5)))) as server:
        config.write_text("\n".join([
            f'task = "{GWTASK}"', f'db = "{db}"', "max_in_flight = 2",
            "[sandbox]", 'kind = "docker"', 'mode = "pool"',
            "[mutation]", 'operator = "ast"',
            "[llm]", f'models = [ {{ name = "scripted", base_url = "{server.base_url}", model = "fault-model", '
                     'api_key_env = "OPENENDED_TEST_KEY", max_retries = 0, timeout_s = 5.0, max_total_s = 5.0 } ]',
            "[gateway]", "max_calls_per_child = 2",
            "[budget]", "max_children = 4",
        ]) + "\n")
        proc = subprocess.run([python, "-m", "openended", "run", str(config), "--quiet"],
                              env={**cli_env, "OPENENDED_TEST_KEY": key}, capture_output=True, text=True, timeout=300)
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with ArchiveDB(db, readonly=True) as store:
        agents = {a["id"]: a for a in (store.agent(i) for i in range(4))}
        transcripts = {i: store.transcripts(i) for i in range(4)}
    seed = agents[0]
    assert seed["status"] == "archived", seed
    (record,) = transcripts[0]
    # the seed asks three times; the limit of two calls refuses the third, and the child is recorded with it
    assert (record["calls"], record["rejected"], record["limit_hit"]) == (2, 1, "max_calls_per_child")
    assert [e["response"] for e in record["entries"] if e["upstream"]] == ["answer to question 0",
                                                                           "answer to question 1"]
    assert "[gateway] this agent reached its limit max_calls_per_child" in seed["feedback"]
    calls = 0
    for agent_id, agent in agents.items():
        spent = transcripts[agent_id]
        assert (agent["tokens_in"], agent["tokens_out"]) == (sum(t["tokens_in"] for t in spent),
                                                             sum(t["tokens_out"] for t in spent)), agent_id
        assert all(t["tokens_in"] == 10 * t["calls"] for t in spent)
        calls += sum(t["calls"] for t in spent)
    assert calls == len(requests) >= 2, "every upstream request is on some child's row"
    assert {r.headers.get("authorization") for r in requests} == {f"Bearer {key}"}
    shown = subprocess.run([python, "-m", "openended", "show", str(db), "0", "--transcript"], env=cli_env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "answer to question 1" in shown.stdout and "limit hit: max_calls_per_child" in shown.stdout
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gw.db"))
    for text in (proc.stdout, proc.stderr, shown.stdout, stored.decode("utf-8", "replace")):
        assert key not in text


def test_a_resume_forgets_the_transcripts_of_work_it_redoes(tmp_path):
    """A kill between a lease's end (its transcript stored) and the child's step leaves a transcript of work
    a resume redoes: it is dropped; finished children's, a mutated child's self-edit and its diagnosis stay."""
    import time

    from archive_db import ArchiveDB, Outcome, Proposal
    from openended.gateway.campaign import forget_unfinished_transcripts

    def transcript(db, agent_id, endpoint="completion"):
        db.add_transcript(agent_id, calls=1, rejected=0, tokens_in=5, tokens_out=1, cost=0.0, limit_hit=None,
                          entries=[{"endpoint": endpoint, "request": "r", "response": "a"}])

    with ArchiveDB(tmp_path / "t.db") as db:
        db.create_run(name="t", task="toy", seed=1, config={}, descriptor_schema={"space": {"names": []}})
        db.propose([Proposal(0, None, "seed", 1), Proposal(1, 0, "self_improve", 2),
                    Proposal(2, 0, "self_improve", 3)])
        db.record([Outcome(0, "mutated", files={"a.py": b"x = 0\n"})])
        transcript(db, 0)  # its evaluation: finished below, kept
        db.record([Outcome(0, "archived", fitness=1.0, descriptors=[])])
        transcript(db, 1)  # agent 1's self-edit, its lease ended before the kill: its mutation is redone
        transcript(db, 2)  # agent 2's self-edit: its genome was stored after it, kept
        time.sleep(0.01)
        db.record([Outcome(2, "mutated", files={"a.py": b"x = 2\n"})])
        transcript(db, 2, endpoint="diagnosis")  # committed with its genome: kept
        time.sleep(0.01)
        transcript(db, 2)  # an evaluation of agent 2 cut short by the kill: redone
        assert forget_unfinished_transcripts(db) == 2
        left = [(row["agent_id"], row["entries"][0]["endpoint"]) for i in (0, 1, 2) for row in db.transcripts(i)]
    assert left == [(0, "completion"), (2, "completion"), (2, "diagnosis")]
