"""What the gateway hands back when an evaluation ends: a child's usage and its transcript.

Plain frozen dataclasses (picklable across Ray, JSON through :meth:`GatewayUsage.to_json`). A
transcript holds request bodies and answers as the agent sent and received them, each cut to the
gateway's ``transcript_chars``; never a header, so never an Authorization header or a key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The per-child limits a usage record may name in ``limit_hit``.
LIMIT_NAMES = ("max_tokens_per_child", "max_calls_per_child", "max_cost_per_child")


@dataclass(frozen=True)
class GatewayLimits:
    """The per-child limits and guards the gateway enforces (``openended.config.GatewayConfig``'s fields)."""

    max_tokens_per_child: int | None = None
    max_calls_per_child: int | None = None
    max_cost_per_child: float | None = None
    requests_per_second: float = 20.0
    burst: int = 20
    max_concurrent_per_child: int = 4
    max_connections_per_child: int = 16
    max_body_bytes: int = 1_000_000
    transcript_chars: int = 4000
    transcript_entries: int = 200

    @classmethod
    def of(cls, settings: Any) -> GatewayLimits:
        """From any object with these attributes (a ``GatewayConfig``); missing ones keep their defaults."""
        names = cls.__dataclass_fields__
        return cls(**{name: getattr(settings, name) for name in names if hasattr(settings, name)})


# The endpoint of the transcript entry that holds a self_improve child's diagnosis (openended.mutation.
# self_improve): not a request the agent made, but the call that told it what to change.
DIAGNOSIS_ENDPOINT = "diagnosis"


@dataclass(frozen=True)
class TranscriptEntry:
    """One request of a child and what it got. ``status`` is the HTTP status the agent saw (200, or the
    error); ``upstream`` whether the request reached a model. Tokens and cost are what it spent."""

    at: float  # seconds since the evaluation's gateway was opened
    endpoint: str  # "chat" | "completion" | the path of anything else
    model: str | None
    status: int
    upstream: bool
    request: str
    response: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class GatewayUsage:
    """A child's use of the gateway during one evaluation.

    ``calls``: requests forwarded to a model (failed ones included); ``rejected``: requests answered
    with an error that never reached a model (limits, malformed bodies, unknown models, floods, after
    the end). ``limit_hit``: the first per-child limit reached (one of :data:`LIMIT_NAMES`), or None.
    ``transcript_dropped``: requests past ``transcript_entries`` that were counted but not kept."""

    agent_id: int | str
    calls: int = 0
    rejected: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    limit_hit: str | None = None
    transcript: tuple[TranscriptEntry, ...] = field(default_factory=tuple)
    transcript_dropped: int = 0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GatewayUsage:
        data = json.loads(text)
        data["transcript"] = tuple(TranscriptEntry(**entry) for entry in data.get("transcript") or ())
        return cls(**data)
