"""From a proposed child (parent, operator, seed, model) to the job a worker runs.

Parameter genomes become :class:`Breed` jobs (mutated and evaluated in one task). Code genomes
become :class:`Mutate` jobs, except a ``tune`` group's, which is one :class:`Tune` job; for an LLM
operator the prompt's context is built here, on the driver, which alone reads the store: the parent,
its evaluation, inspirations from the archive, the last error of the parent's children.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from archive_db import ArchiveDB
from openended.config import CampaignConfig
from openended.engine.jobs import Breed, Job, Mutate, Tune
from openended.mutation.output_limits import max_output_tokens
from openended.mutation.prompts import Inspiration, MutationContext, choose_focus
from openended.mutation.self_improve import editor_of, self_edit_seconds, transcript_tail
from openended.names import LLM_OPERATORS, LOCAL_MODEL, MODEL_OPERATORS, ROOT_OPERATORS, SELF_IMPROVE, TUNE, Files
from openended.qd import Archive
from openended.selection import LineageCounts, select_parents
from openended.tasks import Task

GENOME_CACHE_SIZE = 4096


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class GenomeCache:
    """The most recently used genomes (parents are drawn again and again), read from the store on a miss."""

    def __init__(self, db: ArchiveDB, size: int = GENOME_CACHE_SIZE):
        self.db = db
        self.size = size
        self._files: OrderedDict[int, Files] = OrderedDict()

    def get(self, agent_id: int) -> Files:
        files = self._files.get(agent_id)
        if files is None:
            files = self.db.agent_files(agent_id)
            if files:  # an agent with no genome yet may get one later: never remember it as empty
                self.put(agent_id, files)
        else:
            self._files.move_to_end(agent_id)
        return files

    def put(self, agent_id: int, files: Files) -> None:
        self._files[agent_id] = files
        if len(self._files) > self.size:
            self._files.popitem(last=False)


class JobMaker:
    """Builds each proposed child's job; see the module docstring."""

    def __init__(self, task: Task, config: CampaignConfig, db: ArchiveDB, archive: Archive, lineage: LineageCounts,
                 genomes: GenomeCache, last_errors: dict[int, str]):
        self.task = task
        self.config = config
        self.db = db
        self.archive = archive
        self.lineage = lineage
        self.genomes = genomes
        self.last_errors = last_errors  # parent -> why its last child's mutation failed
        self.code = task.genome_kind == "code"

    def job(self, agent_id: int, seed: int, operator: str, parent_id: int | None, model: str | None = None,
            parent2_id: int | None = None) -> Job:
        parent_files = None if parent_id is None else self.genomes.get(parent_id)
        if operator in ROOT_OPERATORS:
            return Breed(agent_id, seed, operator, {}, parent_files)
        params = self.config.mutation.params_for(operator, self.task)
        if not self.code:
            return Breed(agent_id, seed, operator, params, parent_files)
        context = unprepared = max_tokens = None
        editor: Files | None = None
        seconds = 0.0
        if operator in MODEL_OPERATORS:
            assert parent_id is not None and parent_files is not None
            try:
                # Drawn from the child's own seed: the campaign's stream stays the same whether or
                # not a resume rebuilds this context.
                context = self._context(parent_id, parent_files, parent2_id, np.random.default_rng([seed, 1]),
                                        focused=operator == "llm_diff" and self.base_model(model))
            except (ValueError, UnicodeDecodeError) as exc:  # e.g. the parent has no readable code file
                unprepared = f"cannot build the prompt: {exc}"
            if operator == SELF_IMPROVE and context is not None:
                context.parent_transcript = transcript_tail(self.db.transcripts(parent_id))
                seconds = self_edit_seconds(params)
                if editor_of(params) == "seed":  # the DGM's no_selfimprove: a fixed meta-agent makes every change
                    editor = self.genomes.get(0)
                    if not editor:  # not stored (yet): never let the parent edit itself in its place
                        unprepared = "the editor (the seed agent, agent 0) has no stored genome"
                    elif not all(_is_text(data) for data in parent_files.values()):
                        unprepared = "the parent has a file that is not UTF-8 text (the editor gets it as text)"
        if operator in LLM_OPERATORS and context is not None:
            max_tokens = self._max_tokens(operator, model, context)
        return Mutate(agent_id, seed, operator, params, parent_files, model=model, context=context,
                      templates_dir=self.config.llm.templates_dir, unprepared=unprepared, seconds=seconds,
                      editor_files=editor,
                      max_tokens=max_tokens)

    def tune(self, report: list[int], first_id: int, count: int, seed: int, parent_id: int) -> Tune:
        """One ``tune`` group's job: members ``first_id`` .. ``first_id + count - 1`` (seeds ``seed + i``), of
        which ``report`` are still to be recorded."""
        params = self.config.mutation.params_for(TUNE, self.task)
        tolerance = self.task.spec.fitness.tolerance or 0.0
        return Tune(tuple(report), first_id, count, seed, params, self.genomes.get(parent_id),
                    self.db.agent(parent_id)["fitness"], tolerance)

    def _max_tokens(self, operator: str, model: str | None, context: MutationContext) -> int:
        """The answer's limit: sized to the parent's code (and parent 2's, for a crossover)."""
        codes = [context.parent_code]
        if context.parent2_files is not None and context.code_file in context.parent2_files:
            codes.append(context.parent2_files[context.code_file].decode("utf-8", "replace"))
        return max_output_tokens(self.config, model, operator, *codes)

    def base_model(self, model: str | None) -> bool:
        """Whether ``model`` is spoken to with completion-style framing (a base model, like the embedded one)."""
        if model == LOCAL_MODEL:
            return True
        return any(m.name == model and m.api == "completion" for m in self.config.llm.models)

    def _context(self, parent_id: int, parent_files: Files, parent2_id: int | None, rng: np.random.Generator,
                 focused: bool = False) -> MutationContext:
        """What an LLM operator's prompt is built from. ``focused``: the driver picks the text to edit (a
        statement or a table row: the SEARCH text) and the model writes its replacement."""
        parent = self.db.agent(parent_id)
        inspirations = []
        if self.config.llm.inspirations and self.archive.size > 1:
            picks = select_parents("uniform", self.archive, self.lineage, rng, n=self.config.llm.inspirations)
            for other in dict.fromkeys(int(i) for i in picks if int(i) != parent_id):
                row = self.db.agent(other)
                inspirations.append(Inspiration(self.genomes.get(other), row["fitness"], row["feedback"] or ""))
        second = {}
        if parent2_id is not None:
            row = self.db.agent(parent2_id)
            second = dict(parent2_files=self.genomes.get(parent2_id), parent2_fitness=row["fitness"],
                          parent2_feedback=row["feedback"] or "")
        context = MutationContext.for_task(
            self.task, parent_files, parent_fitness=parent["fitness"], parent_feedback=parent["feedback"] or "",
            parent_metrics=parent["metrics"] or {}, inspirations=inspirations,
            last_error=self.last_errors.get(parent_id), **second)
        if focused:
            context.focus = choose_focus(context.parent_code, context.entry_point, rng)
        return context
