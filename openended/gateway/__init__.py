"""The model gateway: agents call a foundation model from inside their sandbox, without a network or a key.

The driver (the process that owns a :class:`Gateway`) serves an OpenAI-compatible endpoint on one
Unix domain socket per evaluation and forwards each request to the campaign's models through
:func:`openended.llm.complete` (its retries and time limits, the keys of the driver's environment).
Every request is charged to the evaluation's agent, per-child limits are enforced, and a
:class:`GatewayUsage` (tokens, cost, calls, the limit hit, the transcript) comes back when the
evaluation ends. Inside the sandbox, ``sandboxes.model`` is the standard-library client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openended.gateway.records import LIMIT_NAMES, GatewayLimits, GatewayUsage, TranscriptEntry
    from openended.gateway.server import Gateway, Lease

__all__ = ["LIMIT_NAMES", "Gateway", "GatewayLimits", "GatewayUsage", "Lease", "TranscriptEntry"]
_SERVER = ("Gateway", "Lease")


def __getattr__(name: str) -> Any:
    # Loaded on first use: every Ray worker imports openended.gateway.relay, and must not pay for the
    # server's modules (the model client and openai, about half a second) on every start.
    if name in __all__:
        from openended.gateway import records, server

        return getattr(server if name in _SERVER else records, name)
    raise AttributeError(f"module 'openended.gateway' has no attribute {name!r}")
