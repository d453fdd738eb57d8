"""Duplicate genomes: a code child whose genome an earlier agent already had, up to formatting, comments
and docstrings (:func:`openended.mutation.normalise.genome_key`), is not evaluated again. It keeps its own
row and genome, with ``duplicate_of`` naming the earlier agent.

The verdict depends on where the first agent with that genome stands: finished -> the duplicate
takes its result; failed for its genome -> the duplicate fails the same way; failed for the
machinery (a lost worker, the engine) -> the duplicate is evaluated itself; still in progress ->
the duplicate waits for the first one's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from archive_db import ArchiveDB, Outcome
from openended.engine.jobs import machinery_failure
from openended.mutation.normalise import genome_key
from openended.names import Files

# What a duplicate's feedback says of it (an exact copy or one that differs only in formatting).
SAME = "(the same program up to formatting, comments and docstrings: not evaluated again)"


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
        self._first = firsts  # genome key -> first agent with it
        self._parked: dict[int, list[int]] = {}  # agent -> later duplicates waiting for its outcome

    @classmethod
    def from_store(cls, db: ArchiveDB) -> Dedupe:
        """The firsts of a stored campaign, keyed afresh (the key is never stored): for each genome up to
        formatting, an agent already evaluated if any (the first such), else the first still waiting for
        evaluation; duplicates never. Each distinct stored genome is read once."""
        firsts: dict[str, int] = {}
        keys: dict[str, str] = {}  # stored genome hash -> its key
        for stored, agent_id in db.conn.execute(
                "SELECT genome_hash, id FROM agents WHERE genome_hash IS NOT NULL AND duplicate_of IS NULL "
                "ORDER BY status = 'mutated', id").fetchall():
            key = keys.get(stored)
            if key is None:
                key = keys[stored] = genome_key(db.agent_files(agent_id))
            firsts.setdefault(key, agent_id)
        return cls(firsts)

    def first(self, agent_id: int, files: Files, *, lowest: bool = False) -> int:
        """The first agent with ``files``' genome; ``agent_id`` itself when the genome is new.
        ``lowest``: the agent with the lowest id stands for the genome, whichever came first."""
        key = genome_key(files)
        first = self._first.setdefault(key, agent_id)
        if lowest and agent_id < first:
            self._first[key] = first = agent_id
        return first

    def claim(self, agent_id: int, files: Files) -> None:
        """``agent_id`` stands for its genome from now on (it is evaluated itself)."""
        self._first[genome_key(files)] = agent_id

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
            feedback=f"duplicate of agent {first_id} {SAME}", duplicate_of=first_id))
    if status == "failed" and not machinery_failure(first["fail_reason"]):
        return Decision(Verdict.INHERIT, Outcome(
            agent_id, "failed", fail_stage=first["fail_stage"], duplicate_of=first_id,
            fail_reason=f"duplicate of agent {first_id} {SAME}, which failed: {first['fail_reason']}"))
    if status == "failed":
        return Decision(Verdict.EVALUATE)
    return Decision(Verdict.WAIT)
