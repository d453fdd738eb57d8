"""From proposed children to the jobs that make them: fresh proposals, and on resume the work a stop left
unfinished (``mutated`` children go straight to evaluation unless they duplicate an earlier genome;
``proposed`` ones are made again from their recorded seeds, a ``tune`` group as one job for whatever of it
is unrecorded)."""

from __future__ import annotations

from typing import Any

from archive_db import ArchiveDB, Proposal
from openended.engine.jobmaker import JobMaker
from openended.engine.jobs import Evaluate, Job
from openended.engine.recorder import Child, Recorder
from openended.engine.tune_groups import TuneGroups
from openended.names import TUNE, Files
from openended.portfolio import Arm


def proposal_jobs(proposals: list[Proposal], jobs: JobMaker, given: dict[int, Files] | None = None) -> list[Job]:
    """One job per proposed child, in order, then one per ``tune`` group; a ``given`` agent (a root whose
    genome the user supplied) is only evaluated."""
    given = given or {}
    made: list[Job] = []
    for p in proposals:
        if p.id in given:
            made.append(Evaluate(p.id, given[p.id]))
        elif p.operator != TUNE:
            made.append(jobs.job(p.id, p.seed, p.operator, p.parent_id, p.model, p.parent2_id))
    return made + TuneGroups.jobs([p for p in proposals if p.operator == TUNE], jobs)


def requeue_unfinished(queue: list[Job], db: ArchiveDB, recorder: Recorder, jobs: JobMaker,
                       mutated: list[dict[str, Any]], proposed: list[dict[str, Any]]) -> None:
    """Append the jobs of these unfinished children (store rows, by id) to ``queue``, and register each
    child with the recorder. ``queue`` is the campaign's own: a duplicate the recorder decides to evaluate
    is put at its front."""
    for row in mutated:
        recorder.children[row["id"]] = Child(row["parent_id"], Arm(row["operator"], row["model"]))
        files = db.agent_files(row["id"])
        first = recorder.dedupe.first(row["id"], files) if recorder.dedupe else row["id"]
        if first != row["id"]:
            recorder.duplicate(row["id"], first)
            continue
        queue.append(Evaluate(row["id"], files))
    for row in proposed:
        recorder.children[row["id"]] = Child(row["parent_id"], Arm(row["operator"], row["model"]))
    queue.extend(proposal_jobs([Proposal(row["id"], row["parent_id"], row["operator"], row["seed"],
                                         model=row["model"], parent2_id=row["parent2_id"]) for row in proposed],
                               jobs))
