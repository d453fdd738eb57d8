"""One evaluation's account at the gateway: its flood and concurrency guard, its per-child limits
(checked and reserved before a call, charged after it), and its transcript.

Used only on the gateway's event-loop thread, so it needs no lock. Limits are enforced before a
call reaches the model: a call may use at most the tokens (and cost) still left after what earlier
calls spent and what calls in flight reserved; its output is capped to fit (``max_tokens``), its input
estimated at four characters a token. A request past a limit is refused (HTTP 403, ``code`` naming the
limit) and ``limit_hit`` says which one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from openended.gateway.protocol import Call, Refusal
from openended.gateway.records import GatewayLimits, GatewayUsage, TranscriptEntry
from openended.llm.spec import ModelSpec


def estimate_tokens(text: str) -> int:
    """About four characters per token (as ``openended.llm.client`` estimates when a server sends no usage)."""
    return max(1, math.ceil(len(text) / 4))


def _cut(text: str, chars: int, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    if len(text) <= chars:
        return text
    return text[:chars] + f"... [{len(text) - chars} more characters]"


@dataclass
class Child:
    agent_id: int | str
    token: str
    path: str
    site: Any  # the asyncio server listening on its socket
    limits: GatewayLimits
    secrets: Callable[[], list[str]]
    opened: float = field(default_factory=time.monotonic)
    ended: bool = False  # no new requests
    closed: bool = False  # its usage was handed back: later answers change nothing
    calls: int = 0
    rejected: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    limit_hit: str | None = None
    in_flight: int = 0
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    transcript: list[TranscriptEntry] = field(default_factory=list)
    dropped: int = 0
    _bucket: float = -1.0
    _refilled: float = 0.0

    # ------------------------------------------------------------ guards
    def admit(self, now: float) -> None:
        """Take one request from the token bucket and a concurrency slot, or refuse with 429."""
        limits = self.limits
        if self._bucket < 0:
            self._bucket, self._refilled = float(limits.burst), now
        self._bucket = min(float(limits.burst), self._bucket + (now - self._refilled) * limits.requests_per_second)
        self._refilled = now
        if self._bucket < 1:
            wait = (1 - self._bucket) / limits.requests_per_second
            raise Refusal(429, f"too many requests: at most {limits.requests_per_second:g} per second "
                               f"(bursts of {limits.burst})", "rate_limit_error", code="flood", retry_after=wait)
        if self.in_flight >= limits.max_concurrent_per_child:
            raise Refusal(429, f"too many requests at once: at most {limits.max_concurrent_per_child} in flight",
                          "rate_limit_error", code="concurrency", retry_after=1.0)
        self._bucket -= 1
        self.in_flight += 1

    def _hit(self, name: str, value: object) -> Refusal:
        self.limit_hit = self.limit_hit or name
        return Refusal(403, f"this child reached its limit {name} = {value}: no more model calls in this evaluation",
                       "limit_reached", code=name)

    def reserve(self, spec: ModelSpec, call: Call) -> tuple[ModelSpec, tuple[int, float]]:
        """The spec this call runs with (``max_tokens`` capped to what the limits leave), and what it reserves."""
        limits = self.limits
        if limits.max_calls_per_child is not None and self.calls + self.in_flight - 1 >= limits.max_calls_per_child:
            raise self._hit("max_calls_per_child", limits.max_calls_per_child)
        tokens_in = estimate_tokens((call.system or "") + call.prompt)
        out = min(call.max_tokens or spec.max_tokens, spec.max_tokens)
        if limits.max_tokens_per_child is not None:
            left = limits.max_tokens_per_child - self.tokens_in - self.tokens_out - self.reserved_tokens - tokens_in
            if left < 1:
                raise self._hit("max_tokens_per_child", limits.max_tokens_per_child)
            out = min(out, left)
        if limits.max_cost_per_child is not None:
            left_cost = limits.max_cost_per_child - self.cost - self.reserved_cost - tokens_in * spec.price_in
            affordable = math.floor(left_cost / spec.price_out) if spec.price_out > 0 else out
            if left_cost <= 0 or affordable < 1:
                raise self._hit("max_cost_per_child", limits.max_cost_per_child)
            out = min(out, affordable)
        cost = tokens_in * spec.price_in + out * spec.price_out
        self.reserved_tokens += tokens_in + out
        self.reserved_cost += cost
        temperature = spec.temperature if call.temperature is None else call.temperature
        return replace(spec, max_tokens=out, temperature=temperature), (tokens_in + out, cost)

    # ------------------------------------------------------------ accounting
    def _keep(self, entry: TranscriptEntry) -> None:
        if len(self.transcript) < self.limits.transcript_entries:
            self.transcript.append(entry)
        else:
            self.dropped += 1

    def refused(self, began: float, endpoint: str, model: str | None, raw: bytes, refusal: Refusal) -> None:
        self.rejected += 1
        chars, secrets = self.limits.transcript_chars, self.secrets()
        self._keep(TranscriptEntry(
            at=round(began - self.opened, 6), endpoint=endpoint, model=model, status=refusal.status, upstream=False,
            request=_cut(raw.decode("utf-8", "replace"), chars, secrets),
            response=_cut(json.dumps(refusal.body()), chars, secrets), seconds=round(time.monotonic() - began, 6)))

    def called(self, began: float, call: Call, model: str, raw: bytes, status: int, text: str, tokens_in: int,
               tokens_out: int, cost: float, reserved: tuple[int, float]) -> None:
        self.reserved_tokens -= reserved[0]
        self.reserved_cost -= reserved[1]
        if self.closed:  # charged already, at the end, with what it reserved
            return
        self.calls += 1
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost += cost
        limits = self.limits
        if limits.max_tokens_per_child is not None and self.tokens_in + self.tokens_out >= limits.max_tokens_per_child:
            self.limit_hit = self.limit_hit or "max_tokens_per_child"
        if limits.max_calls_per_child is not None and self.calls >= limits.max_calls_per_child:
            self.limit_hit = self.limit_hit or "max_calls_per_child"
        if limits.max_cost_per_child is not None and self.cost >= limits.max_cost_per_child:
            self.limit_hit = self.limit_hit or "max_cost_per_child"
        chars, secrets = limits.transcript_chars, self.secrets()
        self._keep(TranscriptEntry(
            at=round(began - self.opened, 6), endpoint=call.endpoint, model=model, status=status, upstream=True,
            request=_cut(raw.decode("utf-8", "replace"), chars, secrets), response=_cut(text, chars, secrets),
            tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, seconds=round(time.monotonic() - began, 6)))

    def record(self, *, charge_in_flight: bool = False) -> GatewayUsage:
        """The usage so far; at the end, calls still in flight are charged what they reserved."""
        tokens_in, cost, calls = self.tokens_in, self.cost, self.calls
        if charge_in_flight and self.in_flight:
            tokens_in += self.reserved_tokens  # an upper bound: the model may still be answering
            cost += self.reserved_cost
            calls += self.in_flight
            self.tokens_in, self.cost, self.calls = tokens_in, cost, calls
            self.reserved_tokens, self.reserved_cost = 0, 0.0
        self.closed = self.closed or charge_in_flight
        return GatewayUsage(agent_id=self.agent_id, calls=calls, rejected=self.rejected, tokens_in=tokens_in,
                            tokens_out=self.tokens_out, cost=cost, limit_hit=self.limit_hit,
                            transcript=tuple(self.transcript), transcript_dropped=self.dropped)
