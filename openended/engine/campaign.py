"""The campaign loop: a steady-state quality-diversity search driven through Ray.

The driver is the only writer to the campaign database. Each child's ``proposed`` row
(parent, operator, seed) is committed, with the driver's RNG state, before any remote work
starts. Up to ``max_in_flight`` Ray tasks (each carrying up to ``batch_size`` children) are
out at once; whichever finishes first is taken with ``ray.wait``, its outcomes are written
in one transaction together with the archive state, and the freed slot is refilled at once.
There is no generation barrier. A kill at any moment loses nothing: resume rebuilds the
archive from the database, re-dispatches ``proposed`` children with their recorded seeds
and sends ``mutated`` ones straight to evaluation.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import ray

from archive_db import ArchiveDB, Outcome, Proposal, genome_hash
from openended.config import CampaignConfig, ConfigError, validate_config
from openended.mutation import ROOT_OPERATORS
from openended.portfolio import LLM_OPERATORS, Arm, Portfolio
from openended.qd import DescriptorSpace, make_archive, restore_archive
from openended.results import InvalidResult, check_result
from openended.sandbox import SandboxUnavailable, docker_engine, resolve as resolve_sandbox
from openended.selection import LineageCounts, select_parents
from openended.tasks import Task, load_task
from openended.engine.worker import ChildResult, Job, mutate_job_remote, run_jobs_remote

# Settings a resumed campaign may change; anything else must match what the run started with.
RESUMABLE_OVERRIDES = ("max_in_flight", "batch_size", "ray_address", "grace_seconds", "stats_every_seconds", "budget",
                       "sandbox")
PARENT_CACHE_SIZE = 4096
LOCAL_MODEL = "local-gemma3-270m"
# Failure reasons that blame the machinery (a lost worker, the engine, the Ray backstop), not the genome.
INFRASTRUCTURE_FAILURES = ("worker failed", "sandbox_error", "no result within")


@dataclass
class Summary:
    """Where a campaign ended, in numbers."""

    db_path: str
    status: str
    stop_reason: str
    children_done: int
    children_failed: int
    children_pending: int
    archive_size: int
    best_fitness: float | None
    qd_score: float
    coverage: float
    seconds: float

    def line(self) -> str:
        best = "n/a" if self.best_fitness is None else f"{self.best_fitness:.4g}"
        return (
            f"{self.status} ({self.stop_reason}): {self.children_done} done, {self.children_failed} failed, "
            f"{self.children_pending} left for resume, archive {self.archive_size}, coverage {self.coverage:.1%}, "
            f"QD score {self.qd_score:.4g}, best fitness {best}, {self.seconds:.1f}s -> {self.db_path}"
        )


@dataclass
class _InFlight:
    jobs: list[Job]
    started: float
    deadline: float
    mutation: bool = False  # a mutate-only task (code tasks): its genome is recorded before evaluation


@dataclass
class _Counters:
    done: int = 0
    failed: int = 0
    best_fitness: float | None = None
    tokens: int = 0
    cost: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class Campaign:
    """One campaign bound to one database file; ``run()`` drives it until a budget or a signal stops it."""

    def __init__(self, config: CampaignConfig, *, progress=None, resume_only: bool = False):
        self.progress = progress
        path = config.db_path()
        new_archive = None
        if not path.exists():
            if resume_only:
                raise ConfigError(f"no such campaign database: {path}")
            # A bad task, archive parameter, operator or initial agent fails before any file is created.
            self.task = load_task(config.task)
            new_archive = self._new_archive(config)
            _resolve_operators(config, self.task)
            _check_initial_agents(config)
            _check_api_keys(config)
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_campaign(path)
        self.db = ArchiveDB(path)
        run = self.db.get_run()
        if run is None:
            if resume_only:
                raise ConfigError(f"{path} holds no campaign; start one with `openended run --db {path}`")
            self.task = load_task(config.task)
            self.config = _resolve_operators(config, self.task)
            self._create_run(self._new_archive(config) if new_archive is None else new_archive)
        else:
            self.config = _merge_for_resume(run["config"], config, self.db.path)
            self.task = load_task(self.config.task)
            _check_api_keys(self.config)
        self._stop_requested = 0
        self._cpus = 1  # CPUs in the Ray cluster, known once run() has joined it
        self._session_start = time.monotonic()
        self._inflight: dict[ray.ObjectRef, _InFlight] = {}
        self._parent_cache: OrderedDict[int, dict[str, bytes]] = OrderedDict()
        self._parent_of: dict[int, int | None] = {}  # children not yet recorded -> their parent
        try:
            self.sandbox, self.sandbox_note = resolve_sandbox(
                self.config.sandbox, task_limits=self.task.limits, db_path=self.db.path,
                secrets=any(m.api_key_env for m in self.config.llm.models))
        except SandboxUnavailable as exc:
            self._lock.close()
            raise ConfigError(f"key 'sandbox.kind': {exc}") from None
        # A backstop for a Ray task that never returns; the sandbox enforces the real per-evaluation limit.
        sandbox_slack = 0.0 if self.sandbox.kind == "inprocess" else 30.0
        self._task_timeout = self.config.task_timeout_seconds or (self.sandbox.limits.timeout_s * 1.5 + sandbox_slack)
        self._split = self.task.genome_kind == "code"  # code: mutate, store and de-duplicate, then evaluate
        llm = self.config.llm
        if llm.local:
            from openended.llm.local import local_model_unavailable

            problem = local_model_unavailable()
            if problem:
                self._lock.close()
                raise ConfigError(f"key 'llm.local': {problem}")
        self.model_names = ([LOCAL_MODEL] if llm.local else []) + [m.name for m in llm.models]
        self.models: dict = {}  # name -> ModelSpec, once run() has started the local model
        self._llm_server = None
        self.portfolio = Portfolio.build(self.config.mutation.portfolio or [self.config.mutation.operator],
                                         self.model_names, explore=llm.explore)
        self._restore()

    # ----------------------------------------------------------------- set-up
    def _new_archive(self, config: CampaignConfig):
        try:
            return make_archive(
                config.archive.kind,
                space=DescriptorSpace.from_dict(self.task.descriptor_space),
                fitness_offset=self.task.fitness_lower,
                seed=config.seed,
                **config.archive.params,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"key 'archive.params' for archive kind {config.archive.kind!r}: {exc}") from None

    def _create_run(self, archive) -> None:
        initial_random = self.config.mutation.initial_random
        if initial_random is None:
            initial_random = int(self.task.spec.get("initial_random", 0)) if self.task.genome_kind == "params" else 0
        _check_initial_agents(self.config)
        state = {
            "rng": np.random.default_rng(self.config.seed).bit_generator.state,
            "archive": archive.state(),
            "n_given": len(self.config.mutation.initial_agents),
            "n_roots": 1 + len(self.config.mutation.initial_agents) + initial_random,
            "elapsed_seconds": 0.0,
        }
        self.db.create_run(
            name=f"{self.task.name}-seed{self.config.seed}",
            task=self.config.task,
            seed=self.config.seed,
            config=self.config.model_dump(),
            descriptor_schema=archive.schema(),
            state=state,
        )

    def _restore(self) -> None:
        """Rebuild everything in memory from the database: archive, lineage counts, RNG, counters, pending work."""
        run = self.db.get_run()
        self.state = dict(run["state"])
        self.archive = restore_archive(schema=run["descriptor_schema"], state=self.state["archive"], elites=self.db.elites())
        self.n_descriptors = len(run["descriptor_schema"]["space"]["names"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = self.state["rng"]
        self.lineage = LineageCounts.from_counts(self.db.children_counts(), self.db.discovery_counts())
        self.next_id = self.db.next_agent_id()
        progress = self.db.progress_counts()
        best = self.db.best_agent()
        usage = self.db.usage_totals()
        self.counters = _Counters(
            done=progress["done"],
            failed=progress["failed"],
            best_fitness=None if best is None else best["fitness"],
            tokens=usage["tokens"],
            cost=usage["cost"],
        )
        self._finished_at_start = self.counters.done + self.counters.failed
        self.portfolio.restore(self.db.named_query("operator_success"))
        self._arm_of: dict[int, Arm] = {}  # children not yet finished -> the arm that made them
        self._seen = self.db.genome_firsts() if self._split else {}  # genome hash -> first agent with it
        self._parked: dict[int, list[int]] = {}  # agent -> later duplicates waiting for its outcome
        self._last_error = self.db.last_mutation_errors() if self._split else {}
        self._pending: deque[Job] = deque()
        self._isolate: set[int] = set()  # children of a crashed batch, re-run one per Ray task
        for row in self.db.agents_by_status("mutated"):
            self._parent_of[row["id"]] = row["parent_id"]
            self._arm_of[row["id"]] = Arm(row["operator"], row["model"])
            files = self.db.agent_files(row["id"])
            first = self._seen.get(genome_hash(files), row["id"]) if self._split else row["id"]
            if first != row["id"]:
                self._duplicate(row["id"], first)
                continue
            self._pending.append(Job(row["id"], row["seed"], row["operator"], files=files))
        for row in self.db.agents_by_status("proposed"):
            self._arm_of[row["id"]] = Arm(row["operator"], row["model"])
            self._pending.append(self._job(row["id"], row["seed"], row["operator"], row["parent_id"],
                                           row["model"], row["parent2_id"]))
        self.resumed_pending = len(self._pending)

    def _job(self, agent_id: int, seed: int, operator: str, parent_id: int | None, model: str | None = None,
             parent2_id: int | None = None) -> Job:
        self._parent_of[agent_id] = parent_id
        parent_files = None if parent_id is None else self._parent_files(parent_id)
        if operator in ROOT_OPERATORS:
            return Job(agent_id, seed, operator, {}, parent_files)
        params = {**self.task.operator_params(operator),
                  **(self.config.mutation.params if operator == self.config.mutation.operator else {})}
        if not self._split:
            return Job(agent_id, seed, operator, params, parent_files)
        context = error = None
        if operator in LLM_OPERATORS:
            try:
                # Drawn from the child's own seed: the campaign's stream stays the same whether or
                # not a resume rebuilds this context.
                context = self._context(parent_id, parent_files, parent2_id, np.random.default_rng([seed, 1]),
                                        focused=operator == "llm_diff" and self._base_model(model))
            except (ValueError, UnicodeDecodeError) as exc:  # e.g. the parent has no readable code file
                error = f"cannot build the prompt: {exc}"
        return Job(agent_id, seed, operator, params, parent_files, mutate_only=True, model=model, context=context,
                   templates_dir=self.config.llm.templates_dir, error=error)

    def _base_model(self, model: str | None) -> bool:
        """Whether ``model`` is spoken to with completion-style framing (a base model, like the embedded one)."""
        if model == LOCAL_MODEL:
            return True
        return any(m.name == model and m.api == "completion" for m in self.config.llm.models)

    def _context(self, parent_id: int, parent_files: dict[str, bytes], parent2_id: int | None,
                 rng: np.random.Generator, focused: bool = False):
        """What an LLM operator's prompt is built from: the parent, its evaluation, inspirations, its last error.
        ``focused``: the driver picks the statement to edit (the SEARCH text) and the model writes its replacement."""
        from openended.mutation.prompts import Inspiration, MutationContext, choose_focus

        parent = self.db.agent(parent_id)
        inspirations = []
        if self.config.llm.inspirations and self.archive.size > 1:
            picks = select_parents("uniform", self.archive, self.lineage, rng, n=self.config.llm.inspirations)
            for other in dict.fromkeys(int(i) for i in picks if int(i) != parent_id):
                row = self.db.agent(other)
                inspirations.append(Inspiration(self._parent_files(other), row["fitness"], row["feedback"] or ""))
        second = {}
        if parent2_id is not None:
            row = self.db.agent(parent2_id)
            second = dict(parent2_files=self._parent_files(parent2_id), parent2_fitness=row["fitness"],
                          parent2_feedback=row["feedback"] or "")
        context = MutationContext.for_task(
            self.task, parent_files, parent_fitness=parent["fitness"], parent_feedback=parent["feedback"] or "",
            parent_metrics=parent["metrics"] or {}, inspirations=inspirations,
            last_error=self._last_error.get(parent_id), **second)
        if focused:
            context.focus = choose_focus(context.parent_code, context.entry_point, rng)
        return context

    def _parent_files(self, agent_id: int) -> dict[str, bytes]:
        files = self._parent_cache.get(agent_id)
        if files is None:
            files = self.db.agent_files(agent_id)
            self._remember(agent_id, files)
        else:
            self._parent_cache.move_to_end(agent_id)
        return files

    def _remember(self, agent_id: int, files: dict[str, bytes]) -> None:
        self._parent_cache[agent_id] = files
        if len(self._parent_cache) > PARENT_CACHE_SIZE:
            self._parent_cache.popitem(last=False)

    # ------------------------------------------------------------ the loop
    def run(self) -> Summary:
        """Drive the campaign until a budget is spent, the target is reached, or a signal asks it to stop."""
        if self.sandbox.kind == "docker":  # leftovers of an earlier session of this campaign (e.g. a kill -9)
            docker_engine.sweep(self.sandbox.campaign_label)
        started_ray = _ensure_ray(self.config.ray_address)
        self._cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.db.update_run(status="running")
        last_stats = 0.0
        try:
            self._start_models()
            while True:
                reason = self._stop_reason()
                if reason is None:
                    self._fill()
                elif reason in ("token budget", "cost budget"):
                    self._fill(evaluations_only=True)
                elif reason == "signal":
                    stop_reason = reason
                    if self.progress is not None:
                        self.progress.note("stop requested: finishing in-flight children, then stopping")
                    self._drain(grace=self.config.grace_seconds)
                    break
                if not self._inflight:
                    if reason is not None:
                        stop_reason = reason
                        break
                    if self.archive.size == 0 and not self._pending and self.next_id >= self.state["n_roots"]:
                        stop_reason = "every root agent failed"
                        break
                    continue
                self._collect(timeout=0.5)
                now = time.monotonic()
                if now - last_stats >= self.config.stats_every_seconds:
                    self._snapshot()
                    last_stats = now
            status = {"signal": "stopped", "every root agent failed": "failed"}.get(stop_reason, "finished")
            if self._pending and status == "finished":
                status = "stopped"
            return self._finish(status, stop_reason)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if started_ray:
                ray.shutdown()
            if self._llm_server is not None:
                self._llm_server.stop()
            if self.sandbox.kind == "docker":
                docker_engine.sweep(self.sandbox.campaign_label)

    def _start_models(self) -> None:
        """The model specs this session's LLM operators call; the embedded model is started here."""
        from openended.llm import ModelSpec

        if self.config.llm.local and self._llm_server is None:
            from openended.llm.local import LocalModelServer, local_spec

            self._llm_server = LocalModelServer()
            self._llm_server.start()
            self.models[LOCAL_MODEL] = local_spec(self._llm_server)
            if self.progress is not None:
                self.progress.note(f"embedded model {LOCAL_MODEL} serving at {self._llm_server.base_url} "
                                   f"(started in {self._llm_server.startup_seconds:.1f}s)")
        for m in self.config.llm.models:
            self.models[m.name] = ModelSpec(**m.model_dump())

    def _on_signal(self, signum, frame) -> None:
        # Only a flag: printing from a signal handler can re-enter a print in progress.
        self._stop_requested += 1

    def _elapsed(self) -> float:
        return self.state["elapsed_seconds"] + (time.monotonic() - self._session_start)

    def _stop_reason(self) -> str | None:
        """Why no new child should be dispatched, or None to go on."""
        budget = self.config.budget
        if self._stop_requested:
            return "signal"
        target = budget.target_fitness if budget.target_fitness is not None else self.task.fitness_target
        if budget.stop_at_target and target is not None and self.counters.best_fitness is not None:
            if self.counters.best_fitness >= target:
                return "target fitness reached"
        if budget.max_wall_seconds is not None and self._elapsed() >= budget.max_wall_seconds:
            return "wall-time budget"
        if budget.max_tokens is not None and self.counters.tokens >= budget.max_tokens:
            return "token budget"
        if budget.max_cost is not None and self.counters.cost >= budget.max_cost:
            return "cost budget"
        if budget.max_children is not None and self.next_id >= budget.max_children and not self._pending:
            return "children budget"
        return None

    def _fill(self, *, evaluations_only: bool = False) -> None:
        """Dispatch batches until max_in_flight Ray tasks are out (or nothing can be dispatched yet).
        ``evaluations_only``: a spending budget is used up, so only children already mutated (and paid
        for) are sent out: no new proposals, no more model calls."""
        batch = self.config.batch_size if self.task.batchable else 1
        waiting = lambda job: job.mutate_only and (evaluations_only or not self._model_free(job.model))  # noqa: E731
        while len(self._inflight) < self.config.max_in_flight:
            if self._pending and waiting(self._pending[0]):
                # Let work that can go now pass a mutation waiting for its model.
                ready = next((i for i, job in enumerate(self._pending) if not waiting(job)), None)
                if ready is not None:
                    job = self._pending[ready]
                    del self._pending[ready]
                    self._pending.appendleft(job)
            if self._pending and self._pending[0].mutate_only and not waiting(self._pending[0]):
                self._dispatch_mutation(self._pending.popleft())
                continue
            if self._pending and self._pending[0].agent_id in self._isolate:
                job = self._pending.popleft()
                self._isolate.discard(job.agent_id)
                self._dispatch([job])
                continue
            jobs = []
            while (self._pending and len(jobs) < batch and self._pending[0].agent_id not in self._isolate
                   and not self._pending[0].mutate_only):
                jobs.append(self._pending.popleft())
            # New children when nothing is queued, or only a few mutations wait for a busy model.
            if not evaluations_only and (not self._pending or (
                    all(map(waiting, self._pending)) and len(self._pending) < self.config.max_in_flight)):
                for job in self._propose(batch - len(jobs)):
                    (self._pending.append if job.mutate_only else jobs.append)(job)
            if not jobs:
                if self._pending and not all(map(waiting, self._pending)):
                    continue
                return
            self._dispatch(jobs)

    def _propose(self, n: int) -> list[Job]:
        """Write up to n new children's proposed rows (with the RNG state) in one transaction."""
        limit = self.config.budget.max_children
        if limit is not None:
            n = min(n, limit - self.next_id)
        proposals: list[Proposal] = []
        given: dict[int, dict[str, bytes]] = {}
        n_roots, n_given = self.state["n_roots"], self.state.get("n_given", 0)
        while len(proposals) < n and self.next_id + len(proposals) < n_roots:
            agent_id = self.next_id + len(proposals)
            operator = "seed" if agent_id == 0 else "given" if agent_id <= n_given else "random"
            if operator == "given":
                given[agent_id] = _read_agent(self.config.mutation.initial_agents[agent_id - 1])
            proposals.append(Proposal(agent_id, None, operator, int(self.rng.integers(2**63))))
        n_children = n - len(proposals)
        if n_children > 0 and self.archive.size > 0:
            parents = select_parents(
                self.config.selection.strategy, self.archive, self.lineage, self.rng, n=n_children,
                **self.config.selection.params,
            )
            for parent in parents:
                agent_id = self.next_id + len(proposals)
                arm = self.portfolio.choose(self.rng)
                parent2 = None
                if arm.operator == "llm_crossover":
                    parent2 = int(select_parents(self.config.selection.strategy, self.archive, self.lineage, self.rng,
                                                 n=1, **self.config.selection.params)[0])
                seed = int(self.rng.integers(2**63))
                self._arm_of[agent_id] = arm
                proposals.append(Proposal(agent_id, int(parent), arm.operator, seed, model=arm.model,
                                          parent2_id=parent2))
        if not proposals:
            return []
        for p in proposals:
            if p.parent_id is not None:
                self.lineage.note_child(p.parent_id)
        with self.db.transaction():
            self.db.propose(proposals)
            # A given agent's genome is known now: it is stored at once and only evaluated later.
            self.db.record([Outcome(i, "mutated", files=files) for i, files in given.items()])
            self._save_state()
        self.next_id += len(proposals)
        return [Job(p.id, p.seed, p.operator, files=given[p.id]) if p.id in given
                else self._job(p.id, p.seed, p.operator, p.parent_id, p.model, p.parent2_id) for p in proposals]

    def _dispatch(self, jobs: list[Job]) -> None:
        ref = run_jobs_remote.remote(self.task.ref, jobs, self.sandbox)
        now = time.monotonic()
        # The deadline is a backstop measured from dispatch: a task queued behind others on a
        # full cluster gets a timeout for each round of tasks ahead of it.
        rounds_ahead = len(self._inflight) // self._cpus
        self._inflight[ref] = _InFlight(jobs, now, now + self._task_timeout * (1 + rounds_ahead))

    def _model_free(self, model: str | None) -> bool:
        # The embedded llama.cpp server generates for one request at a time: queued calls would only
        # run down their time limits, so its children wait here instead.
        if model != LOCAL_MODEL:
            return True
        return not any(f.mutation and f.jobs[0].model == LOCAL_MODEL for f in self._inflight.values())

    def _dispatch_mutation(self, job: Job) -> None:
        if job.error is not None:
            self._record_mutation(ChildResult(job.agent_id, fail_stage="mutation", model=job.model,
                                              fail_reason=job.error))
            return
        spec = self.models.get(job.model) if job.model is not None else None
        if job.model is not None and spec is None:
            self._record_mutation(ChildResult(job.agent_id, fail_stage="mutation", model=job.model,
                                              fail_reason=f"model {job.model!r} is not configured in this session"))
            return
        ref = mutate_job_remote.remote(self.task.ref, replace(job, model=spec))
        now = time.monotonic()
        limit = 60.0 if spec is None else spec.max_total_s + 30.0
        self._inflight[ref] = _InFlight([job], now, now + limit * (1 + len(self._inflight) // max(1, self.config.max_in_flight)),
                                        mutation=True)

    def _collect(self, timeout: float) -> None:
        """Take whichever Ray tasks finished; fail or split those that crashed or ran past their deadline."""
        refs = list(self._inflight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # take every other one already done too, without waiting
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            flight = self._inflight.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as exc:  # the worker process died or the task could not run
                self._lost(flight, "sandbox", f"worker failed: {_ray_error(exc)}")
                continue
            if flight.mutation:
                self._record_mutation(results)
                continue
            if len(flight.jobs) > 1 and any(r.batch_failure for r in results):
                self._lost(flight, "sandbox", "batch failed")
                continue
            self._record(results)
        now = time.monotonic()
        for ref, flight in list(self._inflight.items()):
            if now > flight.deadline:
                ray.cancel(ref, force=True)
                del self._inflight[ref]
                self._lost(flight, "timeout", f"no result within {self._task_timeout:g}s")

    def _lost(self, flight: _InFlight, stage: str, reason: str) -> None:
        """A whole Ray task failed: re-run a batch one child at a time to find the culprit; fail a lone child."""
        if len(flight.jobs) > 1:
            # Singletons go to the front of the queue; the Ray task size follows the queue.
            self._isolate.update(j.agent_id for j in flight.jobs)
            self._pending.extendleft(reversed(flight.jobs))
            return
        job = flight.jobs[0]
        if flight.mutation:
            self._record_mutation(ChildResult(job.agent_id, fail_stage="mutation", model=job.model,
                                              fail_reason=f"{stage}: {reason}"))
            return
        self._record([ChildResult(job.agent_id, files=job.files, fail_stage=stage, fail_reason=reason)])

    def _record_mutation(self, r: ChildResult) -> None:
        """Store a code child's genome (or its mutation failure) before any evaluation; skip duplicates."""
        usage = dict(model=r.model, tokens_in=r.tokens_in, tokens_out=r.tokens_out, cost=r.cost)
        self.counters.tokens += r.tokens_in + r.tokens_out
        self.counters.cost += r.cost
        parent = self._parent_of.get(r.agent_id)
        if r.fail_stage is not None:
            if parent is not None:
                self._last_error[parent] = r.fail_reason
            self._finish_children([Outcome(r.agent_id, "failed", fail_stage=r.fail_stage, fail_reason=r.fail_reason,
                                           **usage)])
            return
        mutated = Outcome(r.agent_id, "mutated", files=r.files, **usage)
        first = self._seen.setdefault(genome_hash(r.files), r.agent_id)
        if first != r.agent_id:
            self._duplicate(r.agent_id, first, stored=[mutated])
            return
        with self.db.transaction():
            self.db.record([mutated])
            self._save_state()
        self._pending.appendleft(Job(r.agent_id, 0, "", files=r.files))

    def _duplicate(self, agent_id: int, first: int, stored: list[Outcome] = ()) -> None:
        """A child whose genome agent ``first`` already had: not evaluated again; it takes first's result."""
        row = self.db.agent(first)
        if row["status"] in ("archived", "rejected"):
            outcome = Outcome(agent_id, "rejected", fitness=row["fitness"], descriptors=row["descriptors"],
                              metrics=row["metrics"], feedback=f"duplicate of agent {first}", duplicate_of=first)
        elif row["status"] == "failed" and not row["fail_reason"].startswith(INFRASTRUCTURE_FAILURES):
            outcome = Outcome(agent_id, "failed", fail_stage=row["fail_stage"], duplicate_of=first,
                              fail_reason=f"duplicate of agent {first}, which failed: {row['fail_reason']}")
        elif row["status"] == "failed":  # the machinery failed first, not the genome: this one is evaluated
            if stored:
                with self.db.transaction():
                    self.db.record(stored)
                    self._save_state()
            files = self.db.agent_files(agent_id)
            self._seen[genome_hash(files)] = agent_id
            self._pending.appendleft(Job(agent_id, 0, "", files=files))
            return
        else:  # first is still being evaluated: decide when its outcome is in
            if stored:
                with self.db.transaction():
                    self.db.record(stored)
                    self._save_state()
            self._parked.setdefault(first, []).append(agent_id)
            return
        self._finish_children([outcome], stored=stored)

    def _finish_children(self, outcomes: list[Outcome], stored: list[Outcome] = ()) -> None:
        """Record terminal outcomes that need no archive change (failures and duplicates), after the
        ``stored`` steps that lead to them, in one transaction."""
        for o in outcomes:
            self._parent_of.pop(o.id, None)
            arm = self._arm_of.pop(o.id, None)
            if arm is not None:
                self.portfolio.update(arm, False)
        with self.db.transaction():
            self.db.record([*stored, *outcomes])
            self._save_state()
        self._recorded(outcomes)

    def _record(self, results: list[ChildResult]) -> None:
        """Write a batch of outcomes, the archive changes and the driver state in one transaction."""
        outcomes: list[Outcome] = []
        elites: dict[int, int] = {}
        evaluations = [{"agent_id": r.agent_id, **r.evaluation} for r in results if r.evaluation is not None]
        for r in results:
            usage = dict(model=r.model, tokens_in=r.tokens_in, tokens_out=r.tokens_out, cost=r.cost)
            self.counters.tokens += r.tokens_in + r.tokens_out
            self.counters.cost += r.cost
            if r.fail_stage is not None:
                outcomes.append(Outcome(r.agent_id, "failed", files=r.files, fail_stage=r.fail_stage,
                                        fail_reason=r.fail_reason, **usage))
                continue
            try:
                checked = check_result(r.result, self.n_descriptors)
            except InvalidResult as exc:
                outcomes.append(Outcome(r.agent_id, "failed", files=r.files, fail_stage="invalid", fail_reason=str(exc),
                                        eval_seconds=r.eval_seconds, **usage))
                continue
            added = self.archive.add(r.agent_id, checked.fitness, checked.descriptors)
            archived = added.status != "not_added"
            outcomes.append(Outcome(
                r.agent_id,
                "archived" if archived else "rejected",
                files=r.files,
                **usage,
                fitness=checked.fitness,
                descriptors=checked.descriptors,
                metrics=checked.metrics,
                feedback=checked.feedback,
                eval_seconds=r.eval_seconds,
                novelty=added.novelty,
                cell=added.cell,
                archive_event=added.status if archived else None,
            ))
            if archived:
                elites[added.cell] = r.agent_id
                self._remember(r.agent_id, r.files)
            if self.counters.best_fitness is None or checked.fitness > self.counters.best_fitness:
                self.counters.best_fitness = checked.fitness
        for o in outcomes:
            parent = self._parent_of.pop(o.id, None)
            if o.archive_event == "new_cell" and parent is not None:
                self.lineage.note_discovery(parent)
            arm = self._arm_of.pop(o.id, None)
            if arm is not None:
                self.portfolio.update(arm, o.status == "archived")
            if self._split and o.files is not None:
                self._seen.setdefault(genome_hash(o.files), o.id)
        with self.db.transaction():
            self.db.record(outcomes)
            self.db.add_evaluations(evaluations)
            if elites:
                self.db.set_elites(elites)
            self._save_state()
        self._recorded(outcomes)

    def _recorded(self, outcomes: list[Outcome]) -> None:
        """Count outcomes now in the store, and settle the duplicates that were waiting for them."""
        for o in outcomes:
            if o.status == "failed":
                self.counters.failed += 1
            else:
                self.counters.done += 1
        for o in outcomes:
            for later in self._parked.pop(o.id, []):
                self._duplicate(later, o.id)

    def _save_state(self) -> None:
        self.state["rng"] = self.rng.bit_generator.state
        self.state["archive"] = self.archive.state()
        self.db.update_run(state={**self.state, "elapsed_seconds": self._elapsed()})

    def _drain(self, grace: float) -> None:
        """Stop dispatching; give in-flight children up to ``grace`` seconds; the rest stay for resume."""
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline and self._stop_requested < 2:
            self._collect(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        for ref in list(self._inflight):
            ray.cancel(ref, force=True)
            self._pending.extend(self._inflight.pop(ref).jobs)

    # ------------------------------------------------------------ reporting
    def snapshot(self) -> dict:
        stats = self.archive.stats()
        return {
            "children_done": self.counters.done,
            "children_failed": self.counters.failed,
            "children_in_flight": sum(len(f.jobs) for f in self._inflight.values()),
            "children_proposed": self.next_id,
            "max_children": self.config.budget.max_children,
            "archive_size": stats["size"],
            "coverage": stats["coverage"],
            "qd_score": stats["qd_score"],
            "best_fitness": self.counters.best_fitness,
            "mean_fitness": stats["mean_fitness"],
            "elapsed_seconds": self._elapsed(),
            "session_start_finished": self._finished_at_start,
        }

    def _snapshot(self) -> dict:
        snap = self.snapshot()
        self.db.record_stats(
            children_done=snap["children_done"],
            children_failed=snap["children_failed"],
            children_in_flight=snap["children_in_flight"],
            archive_size=snap["archive_size"],
            coverage=snap["coverage"],
            qd_score=snap["qd_score"],
            best_fitness=snap["best_fitness"],
            mean_fitness=snap["mean_fitness"],
        )
        if self.progress is not None:
            self.progress.update(snap)
        return snap

    def _finish(self, status: str, stop_reason: str) -> Summary:
        snap = self._snapshot()
        self.db.update_run(status=status, state={**self.state, "elapsed_seconds": self._elapsed()})
        pending = self.db.progress_counts()["pending"]
        summary = Summary(
            db_path=str(self.db.path),
            status=status,
            stop_reason=stop_reason,
            children_done=snap["children_done"],
            children_failed=snap["children_failed"],
            children_pending=pending,
            archive_size=snap["archive_size"],
            best_fitness=snap["best_fitness"],
            qd_score=snap["qd_score"],
            coverage=snap["coverage"],
            seconds=time.monotonic() - self._session_start,
        )
        self.db.close()
        self._lock.close()
        return summary


def _resolve_operators(config: CampaignConfig, task: Task) -> CampaignConfig:
    """Fill in the operator(s) the task's kind calls for, and refuse operators it cannot use."""
    mutation = config.mutation
    has_model = config.llm.local or bool(config.llm.models)
    code = task.genome_kind == "code"
    operator, portfolio = mutation.operator, list(mutation.portfolio)
    if operator is None:
        if not code:
            operator = "gaussian"
        elif has_model and not portfolio:
            operator, portfolio = "llm_diff", ["llm_diff", "llm_rewrite", "llm_crossover", "ast"]
        else:
            operator = portfolio[0] if portfolio else "ast"
    allowed = ("ast", "noop", *LLM_OPERATORS) if code else ("gaussian", "noop")
    if code and not task.spec.get("code_file") and any(n in LLM_OPERATORS for n in [operator, *portfolio]):
        raise ConfigError(f"key 'mutation.operator': task {task.name!r} names no code_file in its task.toml, "
                          "which the LLM operators edit")
    for key, names in (("mutation.operator", [operator]), ("mutation.portfolio", portfolio)):
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ConfigError(f"key '{key}': task {task.name!r} has a {task.genome_kind} genome; operator(s) {bad} "
                              f"do not apply (use {', '.join(allowed)})")
        if not has_model and any(n in LLM_OPERATORS for n in names):
            raise ConfigError(f"key '{key}': LLM operators need a model: set [llm] local = true (--llm local) "
                              "or add [[llm.models]]")
    data = config.model_dump()
    data["mutation"].update(operator=operator, portfolio=portfolio)
    return validate_config(data, "campaign")


def _merge_for_resume(stored: dict, given: CampaignConfig, db_path) -> CampaignConfig:
    """The stored config, with the settings a resume may change taken from ``given`` where it set them."""
    merged = dict(stored)
    # The cluster is where this session runs, not where the campaign started: None = a local Ray.
    merged["ray_address"] = given.ray_address
    for key, value in given.model_dump(exclude_unset=True).items():
        if key == "db":
            continue
        if key in RESUMABLE_OVERRIDES:
            merged[key] = {**stored.get(key, {}), **value} if isinstance(value, dict) else value
            continue
        # Only the keys that were set explicitly must agree with how the campaign started.
        before = stored.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            before = {k: before.get(k) for k in value}
        if before != value:
            raise ConfigError(
                f"{db_path}: the campaign was started with {key} = {before!r}; "
                f"it cannot resume with {key} = {value!r} (only {', '.join(RESUMABLE_OVERRIDES)} may change)"
            )
    merged["db"] = str(db_path)
    return validate_config(merged, str(db_path))


def _check_api_keys(config: CampaignConfig) -> None:
    """Every model's key variable is set (its value is never read here)."""
    for i, m in enumerate(config.llm.models):
        if m.api_key_env and not os.environ.get(m.api_key_env):
            raise ConfigError(f"key 'llm.models[{i}].api_key_env': environment variable {m.api_key_env} "
                              f"(the key of model {m.name!r}) is not set")


def _check_initial_agents(config: CampaignConfig) -> None:
    for i, folder in enumerate(config.mutation.initial_agents):
        if not Path(folder).is_dir():
            raise ConfigError(f"key 'mutation.initial_agents[{i}]': {folder!r} is not a folder")


def _read_agent(folder: str) -> dict[str, bytes]:
    """An agent's files from a folder (relative path -> bytes), caches and hidden files left out."""
    root = Path(folder)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    if not files:
        raise ConfigError(f"key 'mutation.initial_agents': folder {folder!r} holds no files")
    return files


def _lock_campaign(path) -> object:
    """Hold an exclusive lock beside the database for this process's lifetime (the OS drops it on any exit)."""
    lock = open(f"{path}.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"{path} is being run by another process; wait for it, or stop it first") from None
    return lock


def _ensure_ray(address: str | None) -> bool:
    """Start a local Ray, or join ``address``; returns whether this call started it."""
    if ray.is_initialized():
        return False
    # Workers' own log lines would garble the progress display; every failure is in the database.
    ray.init(address=address, include_dashboard=False, logging_level="ERROR", configure_logging=True, log_to_driver=False)
    return True


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def run_campaign(config: CampaignConfig, *, progress=None) -> Summary:
    """Start a campaign (or continue the one already in ``config``'s database) and run it."""
    return Campaign(config, progress=progress).run()
