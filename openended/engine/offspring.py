"""Which children a block of the campaign proposes: parents by the campaign's selection, an operator (x model)
by the portfolio's bandit, a seed each; a ``tune`` pick proposes its whole group (:mod:`.tune_groups`).

Every draw comes from the campaign's generator in a fixed order, so the same generator state and archive give
the same children (the reproducible mode and resume rely on it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from archive_db import Proposal
from openended.config import SelectionConfig
from openended.engine.tune_groups import TuneGroups
from openended.mutation.tune import group_seed
from openended.names import TUNE, Files
from openended.portfolio import Arm, Portfolio
from openended.qd import Archive
from openended.selection import LineageCounts, select_parents


@dataclass(frozen=True, slots=True)
class Offspring:
    """One proposed child and the portfolio arm that makes it."""

    proposal: Proposal
    arm: Arm


@dataclass
class OffspringMaker:
    """Proposes children from the archive as it stands (see the module docstring)."""

    selection: SelectionConfig
    archive: Archive
    lineage: LineageCounts
    portfolio: Portfolio
    tune: TuneGroups
    genome: Callable[[int], Files]

    def make(self, rng: np.random.Generator, first_id: int, n: int, limit: int | None) -> list[Offspring]:
        """Up to ``n`` children from id ``first_id`` on; a tune group is made whole (up to ``evaluations - 1``
        beyond ``n``), never beyond the budget's ``limit`` on ids."""
        made: list[Offspring] = []
        parents = select_parents(self.selection.strategy, self.archive, self.lineage, rng, n=n,
                                 **self.selection.params)
        for parent in parents:
            agent_id = first_id + len(made)
            if len(made) >= n or (limit is not None and agent_id >= limit):
                break
            arm = self.portfolio.choose(rng)
            parent2 = self._second_parent(arm, rng)
            seed = int(rng.integers(2**63))
            members = 1
            if arm.operator == TUNE:  # a group of children (openended.mutation.tune): seeds seed + index
                tuned, members = self.tune.group(int(parent), self.archive, self.lineage, rng, self.genome)
                if members == 0 and len(self.portfolio.arms) > 1:
                    # nothing to tune: another operator makes this child instead of one that fails at once
                    arm, members = self.portfolio.choose(rng, without=TUNE), 1
                    parent2 = self._second_parent(arm, rng)
                else:
                    # tune alone and nothing to tune: one child of that agent, which fails saying why
                    parent, members = tuned, max(members, 1)
                    seed = group_seed(seed)
                    if limit is not None:
                        members = min(members, limit - agent_id)
            for index in range(members):
                made.append(Offspring(Proposal(agent_id + index, int(parent), arm.operator, seed + index,
                                               model=arm.model, parent2_id=parent2), arm))
        return made

    def _second_parent(self, arm: Arm, rng: np.random.Generator) -> int | None:
        if arm.operator != "llm_crossover":
            return None
        return int(select_parents(self.selection.strategy, self.archive, self.lineage, rng, n=1,
                                  **self.selection.params)[0])
