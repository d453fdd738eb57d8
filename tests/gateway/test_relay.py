"""The gateway from another node (openended.gateway.relay): a Ray task whose node is not the driver's gets
a relay socket of its own and reaches the driver's gateway through the door actor, with real Ray, a real
gateway and a scripted OpenAI-compatible upstream. The relay is transparent (the same answers as the
driver's socket), applies the gateway's connection and body limits on the node, and the door opens
nothing but the gateway's own sockets. (tests/cluster/test_cluster_gateway.py: nodes that share nothing.)"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_fault_server import FaultServer

from openended.gateway import Gateway, GatewayLimits
from openended.gateway.relay import GatewayRoute, Relay, local_socket, start_door
from openended.llm import ModelSpec
from sandboxes import model

ray = pytest.importorskip("ray")
HI = [{"role": "user", "content": "hi"}]
ELSEWHERE = "0" * 56  # a node id that is not this one: jobs with this route take the relay


def _gateway(server: FaultServer, **limits) -> Gateway:
    spec = ModelSpec(name="scripted", base_url=server.base_url, model="fault-model", timeout_s=3.0, max_retries=0,
                     max_total_s=5.0)
    return Gateway([spec], GatewayLimits(**limits)).start()


def _route(gateway: Gateway, door, socket_path: str) -> GatewayRoute:
    limits = gateway.limits
    return GatewayRoute(socket_path, ELSEWHERE, door, max_connections=limits.max_connections_per_child,
                        max_body_bytes=limits.max_body_bytes)


def _raw(path: str, method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    conn = model._UnixConnection(path, 20)
    try:
        conn.request(method, url, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@ray.remote(num_cpus=0)
def _agent_on_a_worker(route: GatewayRoute) -> dict:
    """What an agent in a sandbox on another node would do, with the standard OpenAI client."""
    import httpx
    import openai

    from openended.gateway.relay import local_socket
    from sandboxes import model

    with local_socket(route) as path:
        assert path is not None
        seen = {"path": path, "relayed": path != route.socket_path}
        with openai.OpenAI(base_url="http://gateway/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(transport=httpx.HTTPTransport(uds=path))) as client:
            seen["models"] = [m.id for m in client.models.list()]
            seen["chat"] = client.chat.completions.create(model="scripted", messages=HI,
                                                          max_tokens=16).choices[0].message.content
            chunks = list(client.chat.completions.create(model="scripted", messages=HI, stream=True,
                                                         stream_options={"include_usage": True}))
            seen["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            seen["stream_tokens_out"] = chunks[-1].usage.completion_tokens
            try:
                client.completions.create(model="scripted", prompt="def f():", max_tokens=16)
            except openai.PermissionDeniedError as exc:
                seen["refused"] = exc.code
        seen["usage"] = model.usage(socket_path=path)
    seen["folder_left"] = os.path.exists(os.path.dirname(seen["path"]))
    return seen


def test_a_job_on_another_node_reaches_its_gateway_through_the_door(ray_address, upstream):
    with _gateway(upstream, max_calls_per_child=2) as gateway:
        door, node_id = start_door(gateway.socket_dir)
        assert node_id == ray.get_runtime_context().get_node_id()
        lease = gateway.open(7)
        seen = ray.get(_agent_on_a_worker.remote(_route(gateway, door, lease.socket_path)), timeout=120)
        usage = gateway.end(lease)
    assert seen["relayed"] and not seen["path"].startswith(str(gateway.socket_dir))
    assert seen["models"] == ["scripted"]
    assert seen["chat"] == seen["stream"] == "scripted answer" and seen["stream_tokens_out"] == 5
    assert seen["refused"] == "max_calls_per_child"  # the driver's limits hold for relayed calls
    assert (seen["usage"]["calls"], seen["usage"]["tokens_in"], seen["usage"]["tokens_out"]) == (2, 20, 10)
    assert (usage.calls, usage.tokens_in, usage.limit_hit) == (2, 20, "max_calls_per_child")
    assert len(upstream.requests) == 2
    assert not seen["folder_left"]  # the relay's socket and folder go with the evaluation


def test_on_the_drivers_node_the_socket_is_used_as_it_is(ray_address, upstream):
    with _gateway(upstream) as gateway:
        lease = gateway.open(1)
        here = GatewayRoute(lease.socket_path, ray.get_runtime_context().get_node_id(), door=object())
        with local_socket(here) as path:
            assert path == lease.socket_path
        with local_socket(None) as path:
            assert path is None
        gateway.end(lease)


@pytest.fixture
def relayed(ray_address, upstream, tmp_path):
    """A gateway lease and a relay of it (in this process) to compare answers through."""
    with _gateway(upstream, requests_per_second=1000.0, burst=1000, max_connections_per_child=4,
                  max_body_bytes=2000) as gateway:
        door, _ = start_door(gateway.socket_dir)
        lease = gateway.open(3)
        relay = Relay(_route(gateway, door, lease.socket_path), folder=str(tmp_path))
        try:
            yield gateway, lease, relay, door
        finally:
            relay.close()
            gateway.end(lease)


BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda prompt, n: json.dumps({"model": "scripted", "prompt": prompt, "max_tokens": n}).encode(),
              st.text(max_size=80), st.integers(-5, 50)),
    st.builds(lambda content: json.dumps({"messages": [{"role": "user", "content": content}]}).encode(),
              st.one_of(st.text(max_size=40), st.integers(), st.none())),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, url=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/nothing"]))
def test_the_relay_answers_what_the_drivers_socket_answers(relayed, body, url):
    gateway, lease, relay, _ = relayed
    direct = _raw(lease.socket_path, "POST", url, body)
    through = _raw(relay.path, "POST", url, body)
    assert through[0] == direct[0]
    if direct[0] != 200:  # errors say the same (successes differ only in their ids and times)
        assert through[1] == direct[1]


def test_the_relay_applies_the_body_and_connection_limits_on_the_node(relayed, upstream):
    gateway, lease, relay, _ = relayed
    before = len(upstream.requests)
    status, body = _raw(relay.path, "POST", "/v1/completions", b"x" * 2001)
    assert status == 413 and b"2000 bytes" in body
    held = []
    for _ in range(4):  # the limit's worth of idle connections, each waiting for a request
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(relay.path)
        held.append(conn)
    time.sleep(0.3)
    extra = socket.socket(socket.AF_UNIX)
    extra.connect(relay.path)
    extra.settimeout(10)
    answer = extra.recv(4096)
    assert answer.startswith(b"HTTP/1.1 429") and b"at most 4" in answer
    for conn in (*held, extra):
        conn.close()
    time.sleep(0.3)
    assert _raw(relay.path, "GET", "/v1/models")[0] == 200  # the held ones gone, the relay serves again
    assert len(upstream.requests) == before  # nothing refused reached the model


def test_an_ended_evaluation_is_refused_through_the_relay_too(ray_address, upstream, tmp_path):
    with _gateway(upstream) as gateway:
        door, _ = start_door(gateway.socket_dir)
        lease = gateway.open(5)
        relay = Relay(_route(gateway, door, lease.socket_path), folder=str(tmp_path))
        try:
            assert _raw(relay.path, "GET", "/v1/models")[0] == 200
            gateway.end(lease)
            status, _ = _raw(relay.path, "GET", "/v1/models")
            assert status == 502  # the socket is gone on the driver: the door cannot connect
        finally:
            relay.close()
    assert not Path(relay.path).exists()


def test_the_door_opens_only_the_gateways_own_sockets(relayed, tmp_path):
    _, lease, _, door = relayed
    for path in ("/var/run/docker.sock", str(tmp_path / "x.sock"), lease.socket_path + "/../../etc/passwd"):
        with pytest.raises(ray.exceptions.RayTaskError, match="not a gateway socket"):
            for ref in door.forward.options(num_returns="streaming").remote(path, b"GET / HTTP/1.1\r\n\r\n"):
                ray.get(ref)
