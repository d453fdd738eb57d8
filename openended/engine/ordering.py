"""The reproducible mode's schedule: which outcomes a child may see, and outcomes applied in child order.

With ``deterministic = true`` a campaign is a function of its configuration and seed, not of the
order in which results come back from the cluster. Two rules make it so:

- Children are proposed in blocks of ``staleness // 2`` (roots first, all in one block). A block
  starting at child ``s`` is proposed from the archive holding exactly the outcomes of every child
  below ``s - block`` (and of the roots): the block before it may still be out, nothing else.
  So a child never misses more than ``staleness - 1`` of its predecessors' outcomes, and which ones
  it misses is fixed by the configuration.
- Outcomes are applied (to the archive, the lineage counts, the operator statistics, the store) in
  child-id order, and never beyond what the next block must not see; a result that arrives early
  waits in memory (at most about ``staleness`` of them). After a kill, those are evaluated again
  on resume from their recorded seeds.

The free ("steady-state") mode applies each outcome the moment it arrives and bounds staleness
only by the number of unfinished children.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

# A reproducible campaign's default staleness at most: two blocks of 32 in flight hide Ray's
# per-task cost for cheap tasks and stay small beside the archives' sizes (see bench/qd.py).
DETERMINISTIC_STALENESS = 64
# The free mode's default: every CPU kept busy with a batch, and never more than this.
FREE_STALENESS_CAP = 256


def deterministic_staleness(*, max_in_flight: int, per_task: int) -> int:
    """A reproducible campaign's staleness when the configuration leaves it unset, fixed when the
    campaign starts: the children the configuration asks to have in flight, at most 64. It never
    depends on the machine, so the same configuration gives the same campaign anywhere; a campaign
    of expensive children one per task (code) gets a small one and so sees its outcomes early."""
    return max(2, min(DETERMINISTIC_STALENESS, max_in_flight * per_task))


def free_limit(staleness: int | None, *, archive_size: int, per_task: int, cpus: int) -> int:
    """How many children the free mode may have unfinished now: ``staleness`` when the configuration
    gives one. By default, enough for each CPU to hold a task and have the next one waiting, capped
    (more buys no throughput and costs search quality), and no more than the archive's members unless
    that is fewer than a task per CPU: early in a campaign children proposed before their outcomes
    arrive would otherwise be mostly siblings (256 children of the root, once), and the floor keeps
    every CPU busy, also when most children fail and the archive grows slowly."""
    if staleness is not None:
        return staleness
    floor = max(1, cpus) * per_task
    return min(max(2, min(FREE_STALENESS_CAP, 2 * floor)), max(floor, archive_size))


@dataclass(frozen=True, slots=True)
class Blocks:
    """The reproducible mode's proposal blocks."""

    n_roots: int
    staleness: int

    @property
    def size(self) -> int:
        return max(1, self.staleness // 2)  # staleness >= 2: a child misses at most 2 * size - 1

    def applied_before(self, start: int) -> int:
        """The children a block starting at ``start`` is proposed from: exactly those below this id."""
        return max(self.n_roots, start - self.size)


T = TypeVar("T")


class InOrder(Generic[T]):
    """Items keyed by child id, applied in id order and only below a limit the caller raises."""

    def __init__(self, frontier: int, apply: Callable[[list[T]], None], *, done: set[int] | None = None):
        self.frontier = frontier  # every child below it has been applied
        self.limit: float = frontier  # children at or above it wait, even when their item is here
        self._apply = apply
        self._held: dict[int, T | None] = dict.fromkeys(done or ())  # None: finished already, nothing to apply
        self._applying = False

    def hold(self, agent_id: int, item: T | None) -> None:
        """``item`` is child ``agent_id``'s to apply in its turn (None: it is finished already)."""
        if agent_id < self.frontier:
            raise ValueError(f"agent {agent_id} was applied already (frontier {self.frontier})")
        self._held[agent_id] = item

    def release(self, limit: float | None = None) -> None:
        """Raise the limit to ``limit`` (if given) and apply every item that is next in order below it,
        in runs of consecutive children. What applying holds is applied in the same call."""
        if limit is not None:
            self.limit = max(self.limit, limit)
        if self._applying:  # applying an item held another one: the loop below takes it
            return
        self._applying = True
        try:
            while self.frontier < self.limit and self.frontier in self._held:
                run: list[T] = []
                while self.frontier < self.limit and self.frontier in self._held:
                    item = self._held.pop(self.frontier)
                    self.frontier += 1
                    if item is not None:
                        run.append(item)
                if run:
                    self._apply(run)
        finally:
            self._applying = False

    def release_all(self) -> None:
        """No child will be proposed again: everything may be applied as soon as its turn comes."""
        self.release(math.inf)
