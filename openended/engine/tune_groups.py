"""The campaign's side of the ``tune`` operator (:mod:`openended.mutation.tune`): how many children a
group proposes, and the Ray jobs that make a group's unfinished children, fresh or on resume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from archive_db import Proposal
from openended.config import CampaignConfig, ConfigError
from openended.mutation.tune import TuneParams, group_of, literals
from openended.names import TUNE, Files
from openended.qd import Archive
from openended.selection import DEFAULT_RECENT, LineageCounts, select_parents
from openended.tasks import Task

if TYPE_CHECKING:
    from openended.engine.jobmaker import JobMaker
    from openended.engine.jobs import Job


@dataclass(frozen=True)
class TuneGroups:
    """A campaign's tune settings: ``evaluations`` children per group, whether ints are tuned too, and the
    tournament that picks the tuned agent (0: the campaign's selection does)."""

    code_file: str
    evaluations: int
    ints: bool
    tournament: int

    @classmethod
    def of(cls, task: Task, config: CampaignConfig) -> TuneGroups:
        """The task's ``[operators.tune]`` under the campaign's ``mutation.params`` (when tune is its operator)."""
        try:
            params = TuneParams.of(config.mutation.params_for(TUNE, task))
        except ValueError as exc:
            raise ConfigError(f"the tune operator's parameters (task {task.name!r}'s [operators.tune] or "
                              f"mutation.params): {exc}") from None
        return cls(task.spec.code_file, params.evaluations, params.ints, params.tournament)

    def tunable(self, agent: Files) -> bool:
        """Whether the agent's code file has literals to tune."""
        try:
            return bool(literals(agent.get(self.code_file, b"").decode("utf-8"), ints=self.ints))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            return False

    def group(self, chosen: int, archive: Archive, lineage: LineageCounts, rng: np.random.Generator,
              genome: Callable[[int], Files]) -> tuple[int, int]:
        """The agent a new group tunes and the group's size, 0 when that agent has nothing to tune. Tuning
        exploits: with ``tournament`` set, the fittest of that many drawn from the newest members, else
        ``chosen`` (the campaign's selection's pick)."""
        if self.tournament:
            chosen = int(select_parents("tournament", archive, lineage, rng, n=1, size=self.tournament,
                                        recent=DEFAULT_RECENT)[0])
        return chosen, self.size(genome(chosen))

    def size(self, agent: Files) -> int:
        """A group's size for this agent: ``evaluations``, or 0 when it has nothing to tune."""
        return self.evaluations if self.tunable(agent) else 0

    @staticmethod
    def jobs(members: list[Proposal], maker: JobMaker) -> list[Job]:
        """One job per group among these unfinished members (a group may be partly finished): the group is
        recognised by its members' seeds and ids, so a resume regroups what a stop cut short."""
        groups: dict[tuple[int, int], list[Proposal]] = {}
        for p in members:
            assert p.parent_id is not None
            groups.setdefault(group_of(p.id, p.seed), []).append(p)
        jobs: list[Job] = []
        for (seed, first_id), group in groups.items():
            last = max(p.id for p in group)
            parent = group[0].parent_id
            assert parent is not None
            jobs.append(maker.tune(sorted(p.id for p in group), first_id, last - first_id + 1, seed, parent))
        return jobs
