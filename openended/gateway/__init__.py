"""The model gateway: agents call a foundation model from inside their sandbox, without a network or a key.

The driver (the process that owns a :class:`Gateway`) serves an OpenAI-compatible endpoint on one
Unix domain socket per evaluation and forwards each request to the campaign's models through
:func:`openended.llm.complete` (its retries and time limits, the keys of the driver's environment).
Every request is charged to the evaluation's agent, per-child limits are enforced, and a
:class:`GatewayUsage` (tokens, cost, calls, the limit hit, the transcript) comes back when the
evaluation ends. Inside the sandbox, ``sandboxes.model`` is the standard-library client.
"""

from openended.gateway.records import LIMIT_NAMES, GatewayLimits, GatewayUsage, TranscriptEntry
from openended.gateway.server import Gateway, Lease

__all__ = ["LIMIT_NAMES", "Gateway", "GatewayLimits", "GatewayUsage", "Lease", "TranscriptEntry"]
