"""The campaign engine: the loop that proposes, dispatches, records and resumes children.

Read in this order: ``campaign`` (the loop), ``dispatch`` (Ray tasks in flight), ``recorder``
(result -> outcome -> archive -> one commit), ``worker`` (the remote side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openended.engine.campaign import Campaign, Summary, run_campaign

__all__ = ["Campaign", "Summary", "run_campaign"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: a Ray worker imports openended.engine.worker, and must not pay for the
    # driver's modules (Ray, the model client) on every start.
    if name in __all__:
        from openended.engine import campaign

        return getattr(campaign, name)
    raise AttributeError(f"module 'openended.engine' has no attribute {name!r}")
