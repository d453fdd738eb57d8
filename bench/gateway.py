"""The model gateway's overhead: a chat request through the gateway (the in-sandbox client over the
evaluation's Unix socket, the gateway, openended.llm.complete, the upstream) minus the same request sent
straight to the same scripted upstream server over loopback TCP, measured in one run, interleaved.

    python bench/gateway.py --out gateway.json [--n 200]
    python bench/gateway.py --smoke --out gateway.json    # CI: 10 requests each

Writes gateway_overhead_ms_p50 (target <= 5 ms), the p50/p95 of both paths in ms,
client_overhead_ms_p50: the part of the overhead that is openended.llm.complete itself (the same
request through complete() straight to the upstream, minus the direct request), which every model call
of a campaign pays with or without the gateway, and gateway_own_overhead_ms_p50: the median of
(through the gateway - through complete() alone), request by request.

relay_overhead_ms_p50: what a request from a sandbox on another node of a cluster adds (its node's
relay, Ray to the door actor on the driver's node, the answer back through a Ray streaming generator;
openended.gateway.relay), measured here on one machine's local Ray against the driver's own socket.

stages_saved_fraction: the share of full-stage evaluations a cascade saves, measured on a campaign of
the three-stage test task (tests/tasks/staged, quick -> medium -> full, where most children are bad
and stop at the quick stage): 1 - (full-stage evaluations run) / (children evaluated), against one full
evaluation per child without the cascade (400 children; 40 with --smoke; in-process sandbox, Ray).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "llm"))

from llm_fault_server import FaultServer, ok  # noqa: E402 - the scripted upstream of the client's tests

from openended.gateway import Gateway, GatewayLimits  # noqa: E402
from openended.llm import ModelSpec, complete  # noqa: E402
from sandboxes import model  # noqa: E402

MESSAGES = [{"role": "user", "content": "Reply with a short sentence about bin packing."}]
ANSWER = "First fit decreasing packs most bins well."


def _direct(base_url: str) -> float:
    """The same request straight to the upstream: one connection, one JSON body, the whole answer."""
    parts = urlsplit(base_url)
    began = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        body = json.dumps({"model": "fault-model", "messages": MESSAGES, "max_tokens": 32}).encode()
        conn.request("POST", parts.path + "/chat/completions", body=body, headers={"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert answer["choices"][0]["message"]["content"] == ANSWER
    return time.perf_counter() - began


def _through_gateway(path: str) -> float:
    began = time.perf_counter()
    text = model.chat(MESSAGES, socket_path=path, max_tokens=32)
    assert text == ANSWER, text
    return time.perf_counter() - began


def _through_client(spec: ModelSpec) -> float:
    began = time.perf_counter()
    assert complete(spec, MESSAGES[0]["content"]).text == ANSWER
    return time.perf_counter() - began


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def measure(n: int) -> dict:
    direct: list[float] = []
    gateway_s: list[float] = []
    client_s: list[float] = []
    with FaultServer(default=ok(ANSWER, usage=(12, 8))) as upstream:
        spec = ModelSpec(name="scripted", base_url=upstream.base_url, model="fault-model", max_tokens=32,
                         max_retries=0, timeout_s=30, max_total_s=30)
        limits = GatewayLimits(requests_per_second=1e6, burst=10**6)
        with Gateway([spec], limits) as gateway:
            lease = gateway.open("bench")
            for _ in range(3):  # warm-up: imports, the first connections
                _direct(upstream.base_url), _through_gateway(lease.socket_path), _through_client(spec)
            for _ in range(n):  # interleaved, so that load on the machine falls on all three alike
                direct.append(_direct(upstream.base_url))
                gateway_s.append(_through_gateway(lease.socket_path))
                client_s.append(_through_client(spec))
            usage = gateway.end(lease)
    assert usage.calls == n + 3 and usage.rejected == 0
    return {
        "gateway_overhead_ms_p50": round(_ms(gateway_s, 0.5) - _ms(direct, 0.5), 3),
        "client_overhead_ms_p50": round(_ms(client_s, 0.5) - _ms(direct, 0.5), 3),
        "direct_ms_p50": _ms(direct, 0.5),
        "direct_ms_p95": _ms(direct, 0.95),
        "gateway_ms_p50": _ms(gateway_s, 0.5),
        "gateway_ms_p95": _ms(gateway_s, 0.95),
        "client_ms_p50": _ms(client_s, 0.5),
        # what the gateway adds on top of the client every model call goes through anyway
        "gateway_own_overhead_ms_p50": round(1000 * statistics.median(
            g - c for g, c in zip(gateway_s, client_s, strict=True)), 3),
    }


def measure_relay(n: int) -> dict:
    """A request from another node's relay (openended.gateway.relay: through Ray to the door on the driver's
    node, then the gateway) against the same request on the driver's socket, interleaved; local Ray."""
    import ray

    from openended.gateway.relay import GatewayRoute, Relay, start_door

    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    socket_s: list[float] = []
    relay_s: list[float] = []
    with FaultServer(default=ok(ANSWER, usage=(12, 8))) as upstream:
        spec = ModelSpec(name="scripted", base_url=upstream.base_url, model="fault-model", max_tokens=32,
                         max_retries=0, timeout_s=30, max_total_s=30)
        with Gateway([spec], GatewayLimits(requests_per_second=1e6, burst=10**6)) as gateway:
            door, _ = start_door(gateway.socket_dir)
            lease = gateway.open("bench")
            relay = Relay(GatewayRoute(lease.socket_path, "another node", door))
            try:
                for _ in range(3):
                    _through_gateway(lease.socket_path), _through_gateway(relay.path)
                for _ in range(n):
                    socket_s.append(_through_gateway(lease.socket_path))
                    relay_s.append(_through_gateway(relay.path))
            finally:
                relay.close()
            usage = gateway.end(lease)
    assert usage.calls == 2 * (n + 3)
    return {"relay_ms_p50": _ms(relay_s, 0.5), "relay_ms_p95": _ms(relay_s, 0.95),
            "relay_overhead_ms_p50": round(_ms(relay_s, 0.5) - _ms(socket_s, 0.5), 3)}


def stages_saved(children: int, db: Path) -> dict:
    """Run a staged campaign of ``children`` and count the evaluations each stage ran."""
    import sqlite3

    from openended.config import load_config
    from openended.engine import Campaign

    overrides = {"task": f"{ROOT / 'tests' / 'tasks' / 'staged'}:parent", "db": str(db), "seed": 0,
                 "budget.max_children": children, "sandbox.kind": "inprocess", "max_in_flight": 2,
                 "stats_every_seconds": 60.0}
    Campaign(load_config(None, overrides)).run()
    con = sqlite3.connect(db)
    try:
        per_stage = dict(con.execute("SELECT stage, COUNT(*) FROM evaluations GROUP BY stage").fetchall())
        evaluated = con.execute("SELECT COUNT(DISTINCT agent_id) FROM evaluations").fetchone()[0]
    finally:
        con.close()
    return {"stages_saved_fraction": round(1 - per_stage.get("full", 0) / max(1, evaluated), 4),
            "stages_children": evaluated, "stages_evaluations": per_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--n", type=int, default=200, help="requests per path")
    parser.add_argument("--smoke", action="store_true", help="10 requests per path: checks the script runs")
    args = parser.parse_args()
    n = 10 if args.smoke else args.n
    import tempfile

    result: dict = {"n": n, "smoke": args.smoke, **measure(n)}  # first: no Ray beside the timed requests
    result.update(measure_relay(n))
    with tempfile.TemporaryDirectory() as tmp:
        result.update(stages_saved(40 if args.smoke else 400, Path(tmp) / "staged.db"))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
