"""Agents on worker nodes that share nothing with the driver call a model through the driver's gateway
(openended.gateway.relay): the gateway's sockets are files of the driver's machine, which no node sees;
each evaluation on a node gets a relay socket there, and its requests reach the gateway through Ray. The
model is a scripted OpenAI-compatible server on the driver's loopback; the key is in the driver's
environment only."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import containers_left
from llm_fault_server import FaultServer, ok
from test_cluster import can_see, containers_created

from openended.sandbox import campaign_label

GWTASK = Path(__file__).resolve().parents[1] / "gateway" / "gwtask"
BUDGET = 12


def test_agents_on_worker_nodes_call_the_model_through_the_drivers_gateway(cluster, tmp_path):
    key = "sk-fake-cluster-" + uuid.uuid4().hex
    user_task = tmp_path / "gwtask"  # a copy only the driver has
    subprocess.run(["cp", "-r", str(GWTASK), str(user_task)], check=True)
    db = tmp_path / "gw.db"
    config = tmp_path / "campaign.toml"
    with FaultServer(default=ok("scripted answer", usage=(10, 5))) as server:
        config.write_text("\n".join([
            f'task = "{user_task}"', f'db = "{db}"', "max_in_flight = 4", f'ray_address = "{cluster.address}"',
            "[sandbox]", 'kind = "docker"',
            "[mutation]", 'operator = "ast"',
            "[llm]", f'models = [ {{ name = "scripted", base_url = "{server.base_url}", model = "fault-model", '
                     'api_key_env = "OPENENDED_TEST_KEY", max_retries = 0, timeout_s = 10.0, max_total_s = 20.0 } ]',
            "[budget]", f"max_children = {BUDGET}",
        ]) + "\n")
        since = time.time()
        env = {**cluster.driver_env(), "OPENENDED_TEST_KEY": key}
        done = subprocess.run([sys.executable, "-m", "openended", "run", str(config), "--quiet"], env=env,
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        requests = list(server.requests)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not can_see(cluster, tmp_path)  # no node saw the task, the database or the config
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT id, status, fail_reason, tokens_in, tokens_out FROM agents ORDER BY id").fetchall()
        calls = con.execute("SELECT COALESCE(SUM(calls), 0) FROM transcripts").fetchone()[0]
    assert len(rows) == BUDGET
    # children the ast operator broke fail as their agent's own error; none failed to reach the model
    failed = [r[2] for r in rows if r[1] == "failed"]
    assert all("ModelError" not in reason and "gateway" not in reason and "sandbox" not in reason
               for reason in failed), failed
    assert rows[0][1] == "archived" and rows[0][3] > 0  # the seed asked the model and was answered
    assert sum(1 for r in rows if r[3] > 0) >= BUDGET // 2
    # every request the model received came from an agent, through the gateway, onto that agent's row
    assert calls == len(requests) >= BUDGET, (calls, len(requests))
    assert sum(r[3] for r in rows) == 10 * len(requests) and sum(r[4] for r in rows) == 5 * len(requests)
    assert {r.headers.get("authorization") for r in requests} == {f"Bearer {key}"}
    label = campaign_label(db)
    created = containers_created(label, since)
    for node in cluster.nodes:  # the agents ran on the worker nodes (the head has no CPUs)
        assert created[node.identity] >= 1, (node.name, created)
    assert set(created) == {n.identity for n in cluster.nodes}, created
    for node in cluster.nodes:  # each evaluation's relay folder went with it; the key never reached a node
        assert not [p for p in cluster.node_files(node) if p.name.startswith("openended-relay-")]
        shown = subprocess.run(["docker", "exec", node.name, "sh", "-c", "env; cat /proc/*/environ 2>/dev/null"],
                               capture_output=True, text=True)
        assert key not in shown.stdout + shown.stderr
    assert not containers_left(label)
