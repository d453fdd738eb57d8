"""The model gateway: agents call a foundation model from inside their sandbox, without a network or a key.

The driver (the process that owns a :class:`Gateway`) serves an OpenAI-compatible endpoint on one
Unix domain socket per evaluation and forwards each request to the campaign's models through
:func:`openended.llm.complete` (its retries and time limits, the keys of the driver's environment).
Every request is charged to the evaluation's agent, per-child limits are enforced, and a
:class:`GatewayUsage` (tokens, cost, calls, the limit hit, the transcript) comes back when the
evaluation ends. Inside the sandbox, ``sandboxes.model`` is the standard-library client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openended.gateway.records import LIMIT_NAMES, GatewayLimits, GatewayUsage, TranscriptEntry
    from openended.gateway.server import Gateway, Lease

# Each name's module, loaded on first use: every Ray worker imports openended.gateway.relay, and must not pay
# for the server's modules (the model client and openai, about half a second) on every start.
_HOME = {"LIMIT_NAMES": "records", "GatewayLimits": "records", "GatewayUsage": "records",
         "TranscriptEntry": "records", "Gateway": "server", "Lease": "server"}
__all__ = ["LIMIT_NAMES", "Gateway", "GatewayLimits", "GatewayUsage", "Lease", "TranscriptEntry"]

if not TYPE_CHECKING:  # a type checker sees the imports above, and a misspelt name stays an error to it

    def __getattr__(name: str) -> Any:
        if name in _HOME:
            return getattr(import_module(f"openended.gateway.{_HOME[name]}"), name)
        raise AttributeError(f"module 'openended.gateway' has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
