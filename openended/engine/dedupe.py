"""Duplicate genomes: a code child whose genome an earlier agent already had is not evaluated again.

The verdict depends on where the first agent with that genome stands: finished -> the duplicate
takes its result; failed for its genome -> the duplicate fails the same way; failed for the
machinery (a lost worker, the engine) -> the duplicate is evaluated itself; still in progress ->
the duplicate waits for the first one's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from archive_db import Outcome, genome_hash
from openended.engine.jobs import machinery_failure
from openended.names import Files


class Verdict(Enum):
    INHERIT = "inherit"  # take the first agent's outcome now
    EVALUATE = "evaluate"  # evaluate this genome itself
    WAIT = "wait"  # decide when the first agent's outcome is in


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    outcome: Outcome | None = None  # with INHERIT: the duplicate's terminal outcome


class Dedupe:
    """Which agent first had each genome, and which duplicates wait for an agent's outcome."""

    def __init__(self, firsts: dict[str, int]):
        self._first = firsts  # genome hash -> first agent with it
        self._parked: dict[int, list[int]] = {}  # agent -> later duplicates waiting for its outcome

    def first(self, agent_id: int, files: Files, *, lowest: bool = False) -> int:
        """The first agent with ``files``' genome; ``agent_id`` itself when the genome is new.
        ``lowest``: the agent with the lowest id stands for the genome, whichever came first."""
        key = genome_hash(files)
        first = self._first.setdefault(key, agent_id)
        if lowest and agent_id < first:
            self._first[key] = first = agent_id
        return first

    def claim(self, agent_id: int, files: Files) -> None:
        """``agent_id`` stands for its genome from now on (it is evaluated itself)."""
        self._first[genome_hash(files)] = agent_id

    def park(self, first: int, later: int) -> None:
        self._parked.setdefault(first, []).append(later)

    def waiting_on(self, first: int) -> list[int]:
        """The duplicates that waited for ``first``'s outcome (forgotten here once asked)."""
        return self._parked.pop(first, [])


def decide(agent_id: int, first: dict) -> Decision:
    """What a duplicate ``agent_id`` gets, given the stored row of the ``first`` agent with its genome."""
    status, first_id = first["status"], first["id"]
    if status in ("archived", "rejected"):
        return Decision(Verdict.INHERIT, Outcome(
            agent_id, "rejected", fitness=first["fitness"], descriptors=first["descriptors"], metrics=first["metrics"],
            feedback=f"duplicate of agent {first_id}", duplicate_of=first_id))
    if status == "failed" and not machinery_failure(first["fail_reason"]):
        return Decision(Verdict.INHERIT, Outcome(
            agent_id, "failed", fail_stage=first["fail_stage"], duplicate_of=first_id,
            fail_reason=f"duplicate of agent {first_id}, which failed: {first['fail_reason']}"))
    if status == "failed":
        return Decision(Verdict.EVALUATE)
    return Decision(Verdict.WAIT)
