"""The campaign engine: the loop that proposes, dispatches, records and resumes children.

Read in this order: ``campaign`` (the loop), ``dispatch`` (Ray tasks in flight), ``recorder``
(result -> outcome -> archive -> one commit), ``worker`` (the remote side).
"""

from openended.engine.campaign import Campaign, Summary, run_campaign

__all__ = ["Campaign", "Summary", "run_campaign"]
