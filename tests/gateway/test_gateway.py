"""The model gateway on the host: answers, attribution, per-child limits, bad input, floods, the end of an
evaluation and upstream faults, with the in-sandbox client (sandboxes.model) against a real scripted
OpenAI-compatible server (tests/llm/llm_fault_server.py). Docker is not needed here (see test_gateway_sandbox)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
from llm_fault_server import FaultServer, error, hang, rate_limit

from openended.config import load_config
from openended.gateway import Gateway, GatewayLimits, GatewayUsage
from openended.llm import ModelSpec
from sandboxes import model
from sandboxes.model import ModelError

KEY = "sk-fake-gateway-test-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]


def _spec(server: FaultServer, **overrides) -> ModelSpec:
    fields = dict(name="scripted", base_url=server.base_url, model="fault-model", timeout_s=3.0, max_retries=1,
                  max_total_s=5.0, price_in=0.001, price_out=0.002)
    fields.update(overrides)
    return ModelSpec(**fields)


def _raw(path: str, method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    """One request over the socket with the standard library, whatever the body."""
    conn = model._UnixConnection(path, 10)
    try:
        conn.request(method, url, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode()}
    finally:
        conn.close()


def test_answers_usage_and_transcript(upstream):
    with Gateway([_spec(upstream)], GatewayLimits(transcript_chars=40)) as gateway:
        lease = gateway.open(7)
        path = lease.socket_path
        assert model.models(socket_path=path) == ["scripted"]
        assert model.usage(socket_path=path) == {"calls": 0, "rejected": 0, "tokens_in": 0, "tokens_out": 0,
                                                 "cost": 0.0, "limit_hit": None}
        assert model.chat(HI, socket_path=path, max_tokens=20) == "scripted answer"
        spent = model.usage(socket_path=path)  # what an evaluator reads between its agent's runs
        assert (spent["calls"], spent["tokens_in"], spent["tokens_out"]) == (1, 10, 5)
        assert model.complete("def f():" + "x" * 100, "scripted", socket_path=path, stop=["\n"]) == "scripted answer"
        status, streamed = _raw(path, "POST", "/v1/chat/completions",
                                json.dumps({"messages": HI, "stream": True}).encode())
        assert status == 200 and "scripted answer" in streamed["raw"] and streamed["raw"].endswith("[DONE]\n\n")
        usage = gateway.end(lease)
    assert (usage.agent_id, usage.calls, usage.rejected) == (7, 3, 0)
    assert (usage.tokens_in, usage.tokens_out) == (30, 15)
    assert usage.cost == pytest.approx(30 * 0.001 + 15 * 0.002)
    assert usage.limit_hit is None
    assert [e.endpoint for e in usage.transcript] == ["chat", "completion", "chat"]
    assert all(e.upstream and e.status == 200 and e.response == "scripted answer" for e in usage.transcript)
    cut = usage.transcript[1].request
    assert cut.startswith('{"stop": ["\\n"], "model": "scripted"') and cut.endswith("more characters]")
    assert len(cut) < 80
    # what reached the server: the request's max_tokens and stop, the model behind the name
    sent = upstream.requests[0].body
    assert sent["model"] == "fault-model" and sent["max_tokens"] == 20
    assert upstream.requests[1].body["stop"] == ["\n"]
    assert GatewayUsage.from_json(usage.to_json()) == usage


def test_bad_input_gets_http_errors_never_reaches_upstream_and_the_gateway_stays_up(upstream):
    with Gateway([_spec(upstream)], GatewayLimits(max_body_bytes=4096)) as gateway:
        lease = gateway.open("a")
        path = lease.socket_path
        bad = [
            ("/v1/chat/completions", b"{not json", 400),
            ("/v1/chat/completions", b"[1, 2]", 400),
            ("/v1/chat/completions", json.dumps({"messages": []}).encode(), 400),
            ("/v1/chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400),
            ("/v1/chat/completions", json.dumps({"messages": HI, "max_tokens": -3}).encode(), 400),
            ("/v1/chat/completions", json.dumps({"messages": HI, "n": 2}).encode(), 400),
            ("/v1/chat/completions", json.dumps({"messages": HI, "temperature": "hot"}).encode(), 400),
            ("/v1/completions", json.dumps({"prompt": 5}).encode(), 400),
            ("/v1/chat/completions", json.dumps({"messages": HI, "model": "gpt-99"}).encode(), 404),
            ("/v1/chat/completions", json.dumps({"messages": HI, "pad": "x" * 10000}).encode(), 413),
            ("/v1/embeddings", json.dumps({"input": "x"}).encode(), 404),
        ]
        for url, body, status in bad:
            got, answer = _raw(path, "POST", url, body)
            assert got == status, (url, body[:60], got, answer)
        with pytest.raises(ModelError) as unknown:
            model.chat(HI, "gpt-99", socket_path=path)
        assert (unknown.value.status, unknown.value.code) == (404, "model_not_found")
        # bytes that are not HTTP at all
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(5)
            raw.connect(path)
            raw.sendall(b"\x00\xff garbage \r\n\r\n")
            assert raw.recv(100).split(b" ")[1] == b"400"
        assert upstream.requests == [], "nothing malformed reached the model"
        assert model.chat(HI, socket_path=path) == "scripted answer", "still up"
        usage = gateway.end(lease)
    assert usage.calls == 1 and usage.rejected == len(bad) - 1 + 1  # the unknown path is not a model request
    assert [e.status for e in usage.transcript if not e.upstream][:3] == [400, 400, 400]


def test_requests_after_the_end_and_on_unknown_sockets_are_refused(upstream, tmp_path):
    with Gateway([_spec(upstream)]) as gateway:
        lease = gateway.open(1)
        keep = model._UnixConnection(lease.socket_path, 10)  # a connection held open across the end
        keep.request("GET", "/v1/models")
        assert keep.getresponse().read() and True
        usage = gateway.end(lease)
        keep.request("POST", "/v1/chat/completions", body=json.dumps({"messages": HI}).encode())
        answer = keep.getresponse()
        assert answer.status == 410 and b"evaluation has ended" in answer.read()
        keep.close()
        with pytest.raises(ModelError) as gone:  # the socket itself is gone
            model.chat(HI, socket_path=lease.socket_path)
        assert gone.value.status == 0
        with pytest.raises(KeyError):
            gateway.end(lease)
        other = gateway.open(2)
        assert model.chat(HI, socket_path=other.socket_path) == "scripted answer"
        assert gateway.end(other).calls == 1
    assert usage.calls == 0 and upstream.requests and len(upstream.requests) == 1


def test_a_flood_gets_429_and_never_reaches_upstream(upstream):
    limits = GatewayLimits(requests_per_second=2, burst=5)
    with Gateway([_spec(upstream)], limits) as gateway:
        lease = gateway.open(3)
        statuses = []
        for _ in range(40):
            try:
                model.chat(HI, socket_path=lease.socket_path)
                statuses.append(200)
            except ModelError as exc:
                statuses.append(exc.status)
                assert exc.code == "flood"
        calm = gateway.open(4)  # another child is not slowed by the flood
        assert model.chat(HI, socket_path=calm.socket_path) == "scripted answer"
        usage = gateway.end(lease)
        gateway.end(calm)
    assert statuses.count(200) <= 7 and statuses.count(429) >= 33, statuses
    assert len(upstream.requests) == statuses.count(200) + 1
    assert usage.rejected == statuses.count(429)


def test_a_flood_of_connections_is_capped_per_child_and_the_gateway_stays_up(upstream):
    with Gateway([_spec(upstream)], GatewayLimits(max_connections_per_child=4)) as gateway:
        lease, other = gateway.open(13), gateway.open(14)
        held = []
        for _ in range(4):
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(lease.socket_path)
            held.append(conn)
        time.sleep(0.2)  # accepted by the loop
        for _ in range(20):
            with socket.socket(socket.AF_UNIX) as extra:
                extra.settimeout(5)
                extra.connect(lease.socket_path)
                answer = extra.recv(200)
                assert answer.startswith(b"HTTP/1.1 429") and b"too many connections" in answer + extra.recv(200)
        assert model.chat(HI, socket_path=other.socket_path) == "scripted answer", "another child is not affected"
        for conn in held:
            conn.close()
        time.sleep(0.2)
        assert model.chat(HI, socket_path=lease.socket_path) == "scripted answer", "its connections are free again"
        usage = gateway.end(lease)
        gateway.end(other)
    assert usage.rejected == 20 and usage.calls == 1


def test_concurrent_requests_of_one_child_are_capped(upstream):
    with Gateway([_spec(upstream, timeout_s=5)], GatewayLimits(max_concurrent_per_child=2)) as gateway:
        lease = gateway.open(5)
        upstream.push(hang(1.0), hang(1.0))
        errors: list[int] = []

        def call() -> None:
            try:
                model.chat(HI, socket_path=lease.socket_path)
            except ModelError as exc:
                errors.append(exc.status)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        with pytest.raises(ModelError) as third:
            model.chat(HI, socket_path=lease.socket_path)
        assert (third.value.status, third.value.code) == (429, "concurrency")
        for thread in threads:
            thread.join(20)
        gateway.end(lease)


@pytest.mark.parametrize(("limits", "name", "answers"), [
    (GatewayLimits(max_calls_per_child=2), "max_calls_per_child", 2),
    (GatewayLimits(max_tokens_per_child=40), "max_tokens_per_child", 3),  # 15 a call, the third capped to fit
    (GatewayLimits(max_cost_per_child=0.05), "max_cost_per_child", 3),  # 0.02 a call, the third capped to fit
])
def test_a_per_child_limit_stops_that_child_with_an_error_it_can_read(upstream, limits, name, answers):
    with Gateway([_spec(upstream)], limits) as gateway:
        heavy, light = gateway.open("heavy"), gateway.open("light")
        got = 0
        with pytest.raises(ModelError) as stopped:
            for _ in range(10):
                model.chat(HI, socket_path=heavy.socket_path)
                got += 1
        assert got == answers
        assert (stopped.value.status, stopped.value.code) == (403, name)
        assert name in stopped.value.message
        assert model.chat(HI, socket_path=light.socket_path) == "scripted answer", "the other child goes on"
        heavy_usage, light_usage = gateway.end(heavy), gateway.end(light)
    assert heavy_usage.limit_hit == name and heavy_usage.calls == answers and heavy_usage.rejected == 1
    assert light_usage.limit_hit is None and light_usage.calls == 1
    assert len(upstream.requests) == answers + 1
    # the last call was capped to what was left (the scripted server ignores max_tokens: real ones do not)
    if name == "max_tokens_per_child":
        assert upstream.requests[2].body["max_tokens"] == 40 - 30 - 1
    if name == "max_cost_per_child":
        assert upstream.requests[2].body["max_tokens"] == int((0.05 - 0.04 - 0.001) / 0.002)


def test_upstream_faults_reach_the_agent_as_errors_within_the_time_limits(upstream):
    spec = _spec(upstream, timeout_s=1.0, max_retries=1, max_total_s=2.5)
    with Gateway([spec]) as gateway:
        lease = gateway.open(9)
        cases = [([rate_limit(retry_after=0.1), rate_limit(retry_after=0.1)], 502, "429"),
                 ([error(500), error(500)], 502, "500"),
                 ([hang(10), hang(10)], 504, "timed out")]
        for script, status, words in cases:
            upstream.push(*script)
            began = time.monotonic()
            with pytest.raises(ModelError) as failed:
                model.chat(HI, socket_path=lease.socket_path)
            seconds = time.monotonic() - began
            assert failed.value.status == status and words in failed.value.message, failed.value.message
            assert seconds < spec.max_total_s + 1.0, f"{words}: {seconds:.1f}s"
        assert model.chat(HI, socket_path=lease.socket_path) == "scripted answer"
        usage = gateway.end(lease)
    assert [e.status for e in usage.transcript] == [502, 502, 504, 200]
    assert usage.calls == 4 and usage.rejected == 0


def test_a_call_in_flight_at_the_end_is_charged_what_it_reserved(upstream):
    gateway = Gateway([_spec(upstream, timeout_s=5, max_total_s=5, max_tokens=100, max_retries=0)], end_grace_s=0.2)
    with gateway:
        lease = gateway.open(11)
        upstream.push(hang(3))
        answers: list[object] = []

        def call() -> None:
            try:
                answers.append(model.chat(HI, socket_path=lease.socket_path))
            except ModelError as exc:
                answers.append(exc.status)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.3)
        usage = gateway.end(lease)
        caller.join(10)
    assert answers == [502], answers  # the hang ended in an error, after the end: still delivered
    assert usage.calls == 1 and usage.tokens_in == 1 + 100, "the estimate of the input and max_tokens"


def test_the_key_reaches_only_the_upstream_authorization_header(upstream, monkeypatch, caplog):
    monkeypatch.setenv("OPENENDED_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    upstream.push(error(500, message=f"echo of the request: Bearer {KEY}"))
    with Gateway([_spec(upstream, api_key_env="OPENENDED_TEST_KEY", max_retries=0)]) as gateway:
        lease = gateway.open(12)
        with pytest.raises(ModelError) as echoed:
            model.chat(HI, socket_path=lease.socket_path)
        # an agent that sends the key text itself (it could only guess it) sees it scrubbed from its transcript
        assert model.chat([{"role": "user", "content": f"is it {KEY}?"}], socket_path=lease.socket_path)
        usage = gateway.end(lease)
    assert KEY not in echoed.value.message
    assert {r.headers.get("authorization") for r in upstream.requests} == {f"Bearer {KEY}"}
    assert KEY not in usage.to_json() and "***" in usage.to_json()
    assert KEY not in caplog.text


def test_gateway_config_table():
    config = load_config(overrides={"gateway.max_tokens_per_child": 5000, "gateway.max_calls_per_child": 3})
    limits = GatewayLimits.of(config.gateway)
    assert (limits.max_tokens_per_child, limits.max_calls_per_child, limits.max_cost_per_child) == (5000, 3, None)
    assert limits.burst == config.gateway.burst


def test_a_standard_openai_client_works_over_the_socket(upstream):
    import httpx
    import openai

    with Gateway([_spec(upstream)], GatewayLimits(max_calls_per_child=3)) as gateway:
        lease = gateway.open(15)
        transport = httpx.HTTPTransport(uds=lease.socket_path)
        with openai.OpenAI(base_url="http://gateway/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(transport=transport)) as client:
            assert [m.id for m in client.models.list()] == ["scripted"]
            chat = client.chat.completions.create(model="scripted", messages=HI, max_tokens=16)
            assert chat.choices[0].message.content == "scripted answer"
            assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (10, 5)
            stream = client.chat.completions.create(model="scripted", messages=HI, stream=True,
                                                    stream_options={"include_usage": True})
            chunks = list(stream)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "scripted answer"
            assert chunks[-1].usage.completion_tokens == 5
            text = client.completions.create(model="scripted", prompt="def f():", max_tokens=16)
            assert text.choices[0].text == "scripted answer"
            with pytest.raises(openai.PermissionDeniedError) as limited:
                client.chat.completions.create(model="scripted", messages=HI)
            assert limited.value.code == "max_calls_per_child"
        usage = gateway.end(lease)
    assert usage.calls == 3 and usage.limit_hit == "max_calls_per_child"
