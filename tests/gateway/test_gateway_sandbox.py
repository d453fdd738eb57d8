"""Agents that call a model from inside a real Docker sandbox (pool and fresh) through the gateway: answers,
attribution to their own agent, a neighbour that cannot use another's socket, a per-child limit that stops
one child only, and a key that never enters the sandbox; then the embedded Gemma behind the same gateway."""

from __future__ import annotations

import json
import logging
import os
import textwrap
import threading
from pathlib import Path

import pytest
from llm_fault_server import FaultServer, ok, respond

from openended.gateway import Gateway, GatewayLimits
from openended.llm import ModelSpec
from openended.sandbox import Limits, SandboxSpec
from openended.sandbox.docker_sandbox import DockerSandbox
from openended.sandbox.process import ProcessSandbox

TASK = Path(__file__).resolve().parent / "task"
KEY = "sk-fake-gateway-sandbox-9f8e7d6c5b4a"

# The agent: calls the model `calls` times (stopping at the first error) and reports what it saw.
AGENT = textwrap.dedent('''
    import os, socket, time
    from sandboxes.model import ModelError, chat, complete

    def _readable(top, budget=2_000_000):
        out = []
        for root, dirs, names in os.walk(top):
            for name in names:
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as fh:
                        out.append(path + "\\n" + fh.read(budget).decode("utf-8", "replace"))
                except OSError:
                    pass
        return "\\n".join(out)

    def run(args):
        out = {"env": dict(os.environ), "answers": [], "errors": [], "gateway_dir": sorted(os.listdir("/gateway"))
               if os.path.isdir("/gateway") else None}
        time.sleep(args.get("sleep", 0))
        for i in range(args.get("calls", 1)):
            try:
                if args.get("completion"):
                    out["answers"].append(complete(args["prompt"], max_tokens=args.get("max_tokens", 16)))
                else:
                    out["answers"].append(chat([{"role": "user", "content": args["prompt"]}], max_tokens=8))
            except ModelError as exc:
                out["errors"].append([exc.status, exc.code, exc.message])
                break
        other = args.get("other_socket")
        if other:  # another evaluation's socket, by its host path: not there
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(other)
                out["other"] = "connected"
            except OSError as exc:
                out["other"] = type(exc).__name__
            finally:
                s.close()
        if args.get("scan"):
            seen = [_readable(top) for top in ("/task", "/agents", "/gateway", "/work", "/tmp", "/dev/shm")]
            for path in ("/proc/self/environ", "/proc/1/environ", "/proc/self/cmdline", "/proc/self/mountinfo"):
                try:
                    seen.append(open(path, "rb").read().decode("utf-8", "replace"))
                except OSError:
                    pass
            out["scan"] = "\\n".join(seen)
        return out
''')


def _sandbox(mode: str, label: str) -> DockerSandbox:
    spec = SandboxSpec(kind="docker", mode=mode, campaign_label=label, gateway=True,
                       limits=Limits(timeout_s=30, memory_mb=256, pids=64))
    return DockerSandbox(spec, str(TASK))


def _run(box, lease, **args) -> tuple[dict, object]:
    outcome = box.evaluate([{"agent.py": AGENT.encode()}], args, gateway=lease.socket_path)
    assert outcome.failure_kind is None, (outcome.reason, outcome.stderr_tail)
    seen = json.loads(outcome.results[0]["feedback"])
    assert "agent_error" not in seen["agent"], seen["agent"]
    return seen, outcome


@pytest.fixture
def upstream():
    # Each answer names the prompt it answers, so attribution can be checked end to end.
    def answer(request):
        return ok(f"answer to {request.prompt}", usage=(10, 5))

    with FaultServer(default=respond(answer)) as server:
        yield server


@pytest.mark.parametrize("mode", ["pool", "fresh"])
def test_an_agent_in_docker_calls_the_model_and_its_tokens_are_its_own(docker_engine, upstream, mode, monkeypatch,
                                                                       caplog):
    monkeypatch.setenv("OPENENDED_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    spec = ModelSpec(name="scripted", base_url=upstream.base_url, model="fault-model",
                     api_key_env="OPENENDED_TEST_KEY", timeout_s=5, max_retries=0, max_total_s=5)
    box = _sandbox(mode, f"test-gateway-{mode}")
    try:
        with Gateway([spec]) as gateway:
            for agent_id in (101, 102):  # two evaluations in a row: in pool mode, the same container
                lease = gateway.open(agent_id)
                seen, outcome = _run(box, lease, prompt=f"from agent {agent_id}", calls=2, scan=True)
                usage = gateway.end(lease)
                agent = seen["agent"]
                assert agent["answers"] == [f"answer to from agent {agent_id}"] * 2 and agent["errors"] == []
                assert agent["gateway_dir"] == ["model.sock"]
                assert agent["env"]["OPENENDED_MODEL_SOCKET"] == "/gateway/model.sock"
                assert (usage.agent_id, usage.calls, usage.tokens_in, usage.tokens_out) == (agent_id, 2, 20, 10)
                assert all(f"from agent {agent_id}" in e.request for e in usage.transcript)
                # the key: in the upstream's Authorization header only
                everything = json.dumps(seen) + outcome.stdout_tail + outcome.stderr_tail + usage.to_json()
                assert KEY not in everything and "OPENENDED_TEST_KEY" not in everything
                assert not os.path.exists(lease.socket_path), "the evaluation's socket is gone"
    finally:
        box.close()
    assert {r.headers.get("authorization") for r in upstream.requests} == {f"Bearer {KEY}"}
    assert len(upstream.requests) == 4
    assert KEY not in caplog.text


def test_concurrent_agents_keep_their_own_attribution_and_a_limit_stops_one_child_only(docker_engine, upstream):
    spec = ModelSpec(name="scripted", base_url=upstream.base_url, model="fault-model", timeout_s=5, max_retries=0,
                     max_total_s=5)
    boxes = {"heavy": _sandbox("pool", "test-gateway-heavy"), "light": _sandbox("pool", "test-gateway-light")}
    seen: dict[str, dict] = {}
    try:
        with Gateway([spec], GatewayLimits(max_tokens_per_child=40)) as gateway:
            leases = {"heavy": gateway.open(201), "light": gateway.open(202)}

            def evaluate(name: str, **args) -> None:
                seen[name] = _run(boxes[name], leases[name], prompt=f"from {name}", **args)[0]["agent"]

            heavy = threading.Thread(target=evaluate, args=("heavy",), kwargs={"calls": 10})
            light = threading.Thread(target=evaluate, args=("light",),
                                     kwargs={"calls": 2, "sleep": 1.0, "other_socket": leases["heavy"].socket_path})
            heavy.start()
            light.start()
            heavy.join(60)
            light.join(60)
            usage = {name: gateway.end(lease) for name, lease in leases.items()}
    finally:
        for box in boxes.values():
            box.close()
    # 15 tokens a call against 40: three answers (the third capped to 40 - 30 - 3 for the prompt), then the error
    assert seen["heavy"]["answers"] == ["answer to from heavy"] * 3
    assert seen["heavy"]["errors"][0][:2] == [403, "max_tokens_per_child"]
    assert seen["light"]["answers"] == ["answer to from light"] * 2 and seen["light"]["errors"] == []
    assert seen["light"]["other"] == "FileNotFoundError", "another evaluation's socket is not in this container"
    assert (usage["heavy"].agent_id, usage["heavy"].calls, usage["heavy"].limit_hit) == (201, 3, "max_tokens_per_child")
    assert (usage["light"].agent_id, usage["light"].calls, usage["light"].limit_hit) == (202, 2, None)
    for name, record in usage.items():
        assert all(f"from {name}" in e.request for e in record.transcript), name
    assert sorted(r.prompt for r in upstream.requests) == ["from heavy"] * 3 + ["from light"] * 2


def test_the_process_sandbox_gives_the_socket_too(upstream):
    spec = ModelSpec(name="scripted", base_url=upstream.base_url, model="fault-model", max_retries=0)
    box = ProcessSandbox(SandboxSpec(kind="process", limits=Limits(timeout_s=30)), str(TASK))
    try:
        with Gateway([spec]) as gateway:
            lease = gateway.open(301)
            seen, _ = _run(box, lease, prompt="from the process sandbox")
            usage = gateway.end(lease)
            refused = box.evaluate([{"agent.py": b""}, {"agent.py": b""}], {}, gateway=gateway.open(302).socket_path)
    finally:
        box.close()
    assert seen["agent"]["answers"] == ["answer to from the process sandbox"] and usage.calls == 1
    assert refused.failure_kind is not None and "one agent per evaluation" in refused.reason


def test_an_agent_in_docker_calls_the_embedded_gemma_through_the_gateway(docker_engine, embedded_model):
    from openended.llm import LocalModelServer, local_spec

    box = _sandbox("pool", "test-gateway-gemma")
    try:
        with LocalModelServer() as server, Gateway([local_spec(server, max_tokens=16)]) as gateway:
            lease = gateway.open(401)
            seen, _ = _run(box, lease, prompt="def fibonacci(n):", completion=True, max_tokens=16)
            usage = gateway.end(lease)
    finally:
        box.close()
    agent = seen["agent"]
    assert agent["errors"] == [] and len(agent["answers"]) == 1 and agent["answers"][0].strip()
    assert usage.agent_id == 401 and usage.calls == 1 and 1 <= usage.tokens_out <= 16 and usage.tokens_in > 0
    assert usage.transcript[0].response == agent["answers"][0]


def test_a_sandbox_not_made_for_the_gateway_refuses_it(docker_engine, upstream):
    from openended.sandbox.inprocess import InProcessSandbox

    spec = ModelSpec(name="scripted", base_url=upstream.base_url, model="fault-model")
    plain = DockerSandbox(SandboxSpec(kind="docker", campaign_label="test-gateway-plain"), str(TASK))
    inprocess = InProcessSandbox(SandboxSpec(kind="inprocess"), str(TASK))
    with_gateway = _sandbox("pool", "test-gateway-late")
    try:
        with Gateway([spec]) as gateway:
            lease = gateway.open(501)
            refused = plain.evaluate([{"agent.py": AGENT.encode()}], {}, gateway=lease.socket_path)
            in_process = inprocess.evaluate([{"agent.py": AGENT.encode()}], {}, gateway=lease.socket_path)
            gone = gateway.end(lease)
            late = with_gateway.evaluate([{"agent.py": AGENT.encode()}], {}, gateway=lease.socket_path)
    finally:
        plain.close()
        with_gateway.close()
    assert refused.failure_kind is not None and "not made for the model gateway" in refused.reason
    assert in_process.failure_kind is not None and "cannot give an evaluation the model gateway" in in_process.reason
    assert late.failure_kind is not None and "gone" in late.reason, "an ended evaluation's socket is not handed out"
    assert gone.calls == 0 and upstream.requests == []
