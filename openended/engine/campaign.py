"""The campaign loop: a steady-state quality-diversity search driven through Ray.

The driver is the only writer to the campaign database. Each child's ``proposed`` row
(parent, operator, seed) is committed, with the driver's RNG state, before any remote work
starts. Up to ``max_in_flight`` Ray tasks (each carrying up to ``batch_size`` children) are
out at once; whichever finishes first is taken, and the freed slot is refilled at once. There
is no generation barrier. Outcomes are written together with the archive state: in the
reproducible mode (the default) in child order, each block of children proposed from a fixed
set of its predecessors' outcomes (:mod:`.ordering`); in the free mode as they arrive. Either
way at most ``staleness`` children are proposed from an archive lacking their predecessors'
outcomes. A kill at any moment loses nothing: resume rebuilds the archive from the database,
re-dispatches ``proposed`` children with their recorded seeds and sends ``mutated`` ones
straight to evaluation.

A child's path: :meth:`Campaign._propose` (here) and :mod:`.offspring` (parent, operator, seed) ->
:mod:`.proposal_jobs` and :mod:`.jobmaker` (its job) ->
:mod:`.dispatch` (out to a worker and back) -> :mod:`.worker` (mutate, evaluate in the sandbox)
-> :mod:`.recorder` (checked, archived, committed).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from archive_db import ArchiveDB, Outcome, Proposal
from openended.clades import clades_from_store
from openended.config import CampaignConfig, ConfigError
from openended.engine import runtime
from openended.engine.dedupe import Dedupe
from openended.engine.dispatch import Dispatcher, RayExecutor, ensure_ray, shutdown_ray
from openended.engine.jobmaker import GenomeCache, JobMaker
from openended.engine.jobs import ChildResult, Job
from openended.engine.offspring import OffspringMaker
from openended.engine.ordering import DETERMINISTIC_STALENESS, Blocks, free_limit
from openended.engine.proposal_jobs import proposal_jobs, requeue_unfinished
from openended.engine.recorder import (
    Child,
    Counters,
    InOrderStart,
    Recorder,
    describe_error,
    lineage_from_store,
    param_recipes,
)
from openended.engine.stages import attach as attach_stages
from openended.engine.tune_groups import TuneGroups
from openended.gateway.campaign import forget_unfinished_transcripts
from openended.llm import ModelSpec
from openended.names import LOCAL_MODEL, MODEL_SERVER_ENDED, TUNE
from openended.portfolio import Portfolio
from openended.qd import Archive, restore_archive
from openended.sandbox import SandboxUnavailable
from openended.sandbox import describe as describe_sandbox
from openended.sandbox import resolve as resolve_sandbox
from openended.standing import Standing, Summary
from openended.tasks import load_task

if TYPE_CHECKING:
    from openended.llm.local import LocalModelServer

# Stop reasons under which children already paid for are still evaluated, but no new ones are made.
SPENT = ("token budget", "cost budget")


class Campaign:
    """One campaign bound to one database file; ``run()`` drives it until a budget or a signal stops it."""

    def __init__(self, config: CampaignConfig, *, progress: Any = None, resume_only: bool = False):
        self.progress = progress
        path = config.db_path()
        new_archive = None
        if not path.exists():
            if resume_only:
                raise ConfigError(f"no such campaign database: {path}")
            # A bad task, archive parameter, operator or initial agent fails before any file is created.
            self.task = load_task(config.task)
            new_archive = runtime.new_archive(config, self.task)
            runtime.resolve_operators(config, self.task)
            runtime.check_initial_agents(config)
            runtime.check_api_keys(config)
            path.parent.mkdir(parents=True, exist_ok=True)
        else:  # refused before a lock file is made beside it or anything is written into it
            runtime.check_database(path, resume_only=resume_only)
        made_lock = not runtime.lock_path(path).exists()
        self._lock = runtime.lock_campaign(path)
        try:
            self._open(config, path, resume_only=resume_only, new_archive=new_archive)
        except BaseException:
            if getattr(self, "db", None) is not None:
                self.db.close()
            runtime.unlock_campaign(self._lock, remove=made_lock)
            raise

    def _open(self, config: CampaignConfig, path: Path, *, resume_only: bool, new_archive: Archive | None) -> None:
        """Everything after the lock: the store opened, the run created or resumed, the sandbox, the models."""
        self.db = ArchiveDB(path)
        run = self.db.get_run()
        if run is None:
            if resume_only:
                raise ConfigError(f"{path} holds no campaign; start one with `openended run --db {path}`")
            self.task = load_task(config.task)
            self.config = runtime.resolve_operators(config, self.task)
            if new_archive is None:  # the file existed (empty): its agents were not checked above
                runtime.check_initial_agents(self.config)
            archive = runtime.new_archive(config, self.task) if new_archive is None else new_archive
            self.config = runtime.create_run(self.db, self.config, self.task, archive)
        else:
            self.config = runtime.merge_for_resume(run["config"], config, self.db.path)
            self.task = load_task(self.config.task)
            runtime.check_api_keys(self.config)
        self._stop_requested = 0
        self._session_start = time.monotonic()
        try:
            self.sandbox, self.sandbox_note = resolve_sandbox(
                self.config.sandbox, task_limits=self.task.limits, db_path=self.db.path,
                secrets=any(m.api_key_env for m in self.config.llm.models))
        except SandboxUnavailable as exc:
            raise ConfigError(f"key 'sandbox.kind': {exc}") from None
        if self.task.gateway:  # its containers get a folder for the evaluation's gateway socket
            self.sandbox = dataclasses.replace(self.sandbox, gateway=True)
        self.sandbox_in_use = describe_sandbox(self.sandbox, self.sandbox_note)
        # A backstop for a Ray task that never returns; the sandbox enforces the real per-evaluation limit.
        sandbox_slack = 0.0 if self.sandbox.kind == "inprocess" else 30.0
        self._task_timeout = self.config.task_timeout_seconds or (self.sandbox.limits.timeout_s * 1.5 + sandbox_slack)
        llm = self.config.llm
        if llm.local:
            from openended.llm.local import local_model_unavailable

            problem = local_model_unavailable()
            if problem:
                raise ConfigError(f"key 'llm.local': {problem}")
        self.model_names = ([LOCAL_MODEL] if llm.local else []) + [m.name for m in llm.models]
        self.models: dict[str, ModelSpec] = {}  # the specs this session calls, once run() has started them
        self._llm_server: LocalModelServer | None = None
        self._gateway: Any = None  # openended.gateway.Gateway, while run() serves a task that asks for it
        operator = self.config.mutation.operator
        assert operator is not None, "resolve_operators names the operator"
        operators: list[str] = list(self.config.mutation.portfolio) or [operator]
        self.tune = TuneGroups.of(self.task, self.config)
        # beside a hosted model the embedded one only edits: its whole programs hardly ever run
        self.portfolio = Portfolio.build(operators, self.model_names, explore=llm.explore,
                                         children_per_pick={TUNE: self.tune.evaluations},
                                         edits_only=frozenset({LOCAL_MODEL}))
        self.dispatcher: Dispatcher | None = None  # once run() has joined Ray
        self._restore()
        if run is not None:
            runtime.check_budget_left(config, self.counters, float(self.state["elapsed_seconds"]),
                                      pending=self.resumed_pending, db_path=self.db.path)

    # ----------------------------------------------------------------- set-up
    def _restore(self) -> None:
        """Rebuild everything in memory from the database: archive, lineage counts, RNG, counters, pending work."""
        run = self.db.get_run()
        assert run is not None
        if self.task.gateway:  # the work of children left unfinished is redone: their transcripts with it
            forget_unfinished_transcripts(self.db)
        self.state = dict(run["state"])
        self.archive = restore_archive(schema=run["descriptor_schema"], state=self.state["archive"],
                                       elites=self.db.elite_arrays())  # columns: no dict per member
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = self.state["rng"]
        self.lineage = lineage_from_store(self.db)
        if self.config.selection.strategy == "clade":  # kept only when used: it walks every child's ancestry
            fitness = self.task.spec.fitness
            self.lineage.clades = clades_from_store(self.db, fitness.lower, fitness.upper)
        self.next_id = self.db.next_agent_id()
        progress, best, usage = self.db.progress_counts(), self.db.best_agent(), self.db.usage_totals()
        self.counters = Counters(done=progress["done"], failed=progress["failed"],
                                 best_fitness=None if best is None else best["fitness"],
                                 tokens=int(usage["tokens"]), cost=usage["cost"])
        self.portfolio.restore(self.db.named_query("operator_success"))
        code = self.task.genome_kind == "code"  # code: mutate, store and de-duplicate, then evaluate
        self.genomes = GenomeCache(self.db)
        self._queue: list[Job] = []  # jobs waiting for the dispatcher (made before run() joins Ray)
        mutated, proposed = self.db.agents_by_status("mutated"), self.db.agents_by_status("proposed")
        unfinished = [row["id"] for row in (*mutated, *proposed)]
        ordered: InOrderStart | None = None
        self.blocks: Blocks | None = None  # the reproducible mode's proposal blocks
        self.staleness = self.config.staleness  # the free mode's default needs the cluster: see _propose
        if self.config.deterministic:
            self.staleness = self.staleness or DETERMINISTIC_STALENESS  # stored at creation (runtime.create_run)
            self.blocks = Blocks(n_roots=self.state["n_roots"], staleness=self.staleness)
            frontier = min(unfinished, default=self.next_id)
            ordered = InOrderStart(frontier, self.db.finished_from(frontier))
        self.recorder = Recorder(
            self.db, self.archive, lineage=self.lineage, portfolio=self.portfolio, counters=self.counters,
            n_descriptors=len(run["descriptor_schema"]["space"]["names"]),
            dedupe=Dedupe.from_store(self.db) if code else None, driver_state=self._driver_state,
            requeue=self._requeue, remember=self.genomes.put, fitness_upper=self.task.spec.fitness.upper,
            ordered=ordered, per_node=self.state.setdefault("children_per_node", {}))
        self.offspring = OffspringMaker(self.config.selection, self.archive, self.lineage, self.portfolio, self.tune,
                                        self.genomes.get)
        self.jobs = JobMaker(self.task, self.config, self.db, self.archive, self.lineage, self.genomes,
                             self.recorder.last_errors)
        if not code:  # parameter children: the store keeps those it can regenerate as recipes (archive_db.recipes)
            self.recorder.recipe_of = param_recipes(self.task, self.config.mutation)
        requeue_unfinished(self._queue, self.db, self.recorder, self.jobs, mutated, proposed)
        self.stager = attach_stages(self)  # staged tasks ([[stages]]): decides after each stage
        in_order = self.recorder.in_order
        if in_order is not None and self.blocks is not None and self.next_id > self.state["n_roots"]:
            # what the block after the last one proposed will see may be applied as it comes, as before the stop
            in_order.release(self.blocks.applied_before(self.next_id))
        self.resumed_pending = len(self._queue)

    def _requeue(self, job: Job) -> None:
        """A job that should go out next (a code child just stored, a duplicate evaluated itself)."""
        if self.dispatcher is None:
            self._queue.insert(0, job)
        else:
            self.dispatcher.queue(job, front=True)

    def _driver_state(self) -> dict:
        self.state["rng"] = self.rng.bit_generator.state
        self.state["archive"] = self.archive.state()
        return {**self.state, "elapsed_seconds": self._elapsed()}

    # ------------------------------------------------------------ the loop
    def run(self) -> Summary:
        """Drive the campaign until a budget is spent, the target is reached, or a signal asks it to stop."""
        spent = self.nothing_to_do()
        if spent is not None:  # e.g. a finished campaign resumed: no Ray, only the run's status made final
            return self._finish("finished", spent)
        runtime.sweep_containers(self.sandbox)  # leftovers of an earlier session of this campaign (e.g. a kill -9)
        started_ray = ensure_ray(self.config.ray_address)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        # what this session runs with, so `status` shows e.g. a budget raised on resume, and its sandbox
        self.state["sandbox"] = self.sandbox_in_use
        self.state.pop("stop_reason", None)  # the last session's, kept for `status` until this one ends
        self.db.update_run(status="running", config=self.config.model_dump(), state=self._driver_state())
        try:
            self._start_models()
            executor: Any = RayExecutor(self.task.ref, self.sandbox, note=self._node_unusable)
            if self.stager is not None:
                executor = self.stager.executor(executor)
            if self.task.gateway:
                executor = self._start_gateway(executor)
            self.dispatcher = Dispatcher(
                executor, self._take, max_in_flight=self.config.max_in_flight,
                batch_size=self.config.batch_size if self.task.batchable else 1, cpus=RayExecutor.cluster_cpus(),
                task_timeout=self._task_timeout, models=self.models)
            for job in self._queue:
                self.dispatcher.queue(job)
            self._queue.clear()
            stop_reason = self._loop(self.dispatcher)
            status = {"signal": "stopped", "every root agent failed": "failed"}.get(stop_reason, "finished")
            if status == "finished" and (self.dispatcher.pending or stop_reason.startswith(MODEL_SERVER_ENDED)):
                status = "stopped"
            return self._finish(status, stop_reason)
        except Exception as exc:  # an error in the driver's own code: the run is marked failed, never left running
            try:
                self.db.update_run(status="failed", state={**self.state, "last_error": describe_error(exc)})
            except Exception:  # the store itself may be what failed (or already closed): the error goes on up
                pass
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if started_ray:
                shutdown_ray()
            if self._gateway is not None:
                self._gateway.close()
                self._gateway = None
            if self._llm_server is not None:
                self._llm_server.stop()
            runtime.sweep_containers(self.sandbox)

    def _loop(self, dispatcher: Dispatcher) -> str:
        """Fill, collect, record until a stop reason holds and nothing is left in flight; returns the reason."""
        last_stats = 0.0
        nodes_lost = 0
        in_order = self.recorder.in_order
        while True:
            reason = self._stop_reason()
            # A stop resume continues (a signal, a crashed model): held outcomes are redone on resume, not released
            interrupted = reason is not None and (reason == "signal" or reason.startswith(MODEL_SERVER_ENDED))
            if in_order is not None and not interrupted and (reason is not None or self.all_proposed()):
                in_order.release_all()  # no child will be proposed again: nothing is left to hold back for
            if interrupted and reason:
                if self.progress is not None:
                    if reason == "signal":
                        self.progress.note("stop requested: finishing in-flight children, then stopping "
                                           "(Ctrl-C again stops at once)")
                    else:
                        self.progress.note(f"{reason}: finishing in-flight children, then stopping")
                self._drain(dispatcher, grace=self.config.grace_seconds)
                return reason
            if reason is None or reason in SPENT:
                dispatcher.fill(self._propose, evaluations_only=reason is not None)
            if not dispatcher.in_flight:
                if reason is not None:
                    return reason
                if self.archive.size == 0 and not dispatcher.pending and self.next_id >= self.state["n_roots"]:
                    return "every root agent failed"
                continue
            dispatcher.collect(timeout=0.5)
            if dispatcher.nodes_lost != nodes_lost:  # children a dead node took down were sent out again
                self.state["nodes_lost"] = self.state.get("nodes_lost", 0) + dispatcher.nodes_lost - nodes_lost
                nodes_lost = dispatcher.nodes_lost
                if self.progress is not None:
                    self.progress.note(f"a Ray node died under a task ({self.state['nodes_lost']} so far): its "
                                       "children go out again on the nodes left")
            now = time.monotonic()
            if now - last_stats >= self.config.stats_every_seconds:
                self._snapshot()
                last_stats = now

    def _node_unusable(self, node: str, why: str | None) -> None:
        """A node the sandbox cannot run on, and why (None: it can again): noted, and kept in the run's state."""
        unusable = self.state.setdefault("nodes_unusable", {})
        if why is None:
            unusable.pop(node, None)
        else:
            unusable[node] = why
        if self.progress is not None:
            self.progress.note(f"Ray node {node} gets no evaluations: {why}" if why is not None else
                               f"Ray node {node} is usable again: evaluations go there")

    def _take(self, mutation: bool, results: list[ChildResult]) -> None:
        """Record results the moment the dispatcher has them (what this queues goes out next)."""
        if mutation:
            self.recorder.mutations(results)
        else:
            (self.stager or self.recorder).evaluations(results)

    def _start_models(self) -> None:
        """The model specs this session's LLM operators call; the embedded model is started here."""
        if self._llm_server is None:
            self._llm_server = runtime.start_embedded_model(self.config, self.progress)
        self.models.update(runtime.model_specs(self.config, self._llm_server))

    def _start_gateway(self, executor: Any) -> Any:
        """The model gateway for a task whose agents call a model: every evaluation gets its socket."""
        from openended.gateway import Gateway, GatewayLimits
        from openended.gateway.campaign import GatewayExecutor, store_usage

        if not self.models:
            raise ConfigError(f"task {self.task.name!r} asks for the model gateway, but no model is configured "
                             "([[llm.models]] or llm.local = true)")
        self._gateway = Gateway(list(self.models.values()), GatewayLimits.of(self.config.gateway)).start()
        from openended.gateway.relay import start_door

        door, node_id = start_door(self._gateway.socket_dir)  # jobs on other nodes reach its sockets through it
        return GatewayExecutor(executor, self._gateway, store_usage(self.db), door=door, node_id=node_id)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: printing from a signal handler can re-enter a print in progress.
        self._stop_requested += 1

    def _elapsed(self) -> float:
        return float(self.state["elapsed_seconds"]) + (time.monotonic() - self._session_start)

    def _stop_reason(self) -> str | None:
        """Why no new child should be made, or None to go on."""
        budget, counters = self.config.budget, self.counters
        if self._stop_requested:
            return "signal"
        target = budget.target_fitness if budget.target_fitness is not None else self.task.fitness_target
        if budget.stop_at_target and target is not None and counters.best_fitness is not None:
            if counters.best_fitness >= target:
                return "target fitness reached"
        if budget.max_wall_seconds is not None and self._elapsed() >= budget.max_wall_seconds:
            return "wall-time budget"
        if budget.max_tokens is not None and counters.tokens >= budget.max_tokens:
            return "token budget"
        if budget.max_cost is not None and counters.cost >= budget.max_cost:
            return "cost budget"
        pending = self.dispatcher.pending if self.dispatcher is not None else self._queue
        if self.all_proposed() and not pending:
            return "children budget"
        ended = self._llm_server.exited() if self._llm_server is not None else None
        if ended is not None:  # more children would all fail on a refused connection: stop, resumable
            return f"{MODEL_SERVER_ENDED}: it {ended}"
        return None

    def nothing_to_do(self) -> str | None:
        """Why a session would end at once with no child to make or finish (a spent budget, a reached target),
        or None when it has work."""
        return None if self._queue else self._stop_reason()

    def all_proposed(self) -> bool:
        """Whether the children budget's every child has been proposed."""
        limit = self.config.budget.max_children
        return limit is not None and self.next_id >= limit

    def _propose(self, n: int) -> list[Job]:
        """New children for the dispatcher: up to ``n`` (the free mode) or the next block (reproducible)."""
        if self.blocks is None:
            assert self.dispatcher is not None, "the free mode proposes only from run()"
            unfinished = self.next_id - self.counters.done - self.counters.failed
            limit = free_limit(self.staleness, archive_size=self.archive.size, per_task=self.dispatcher.batch_size,
                               cpus=self.dispatcher.cpus)
            return self._make(min(n, limit - unfinished))
        start, n_roots = self.next_id, self.state["n_roots"]
        if start < n_roots:  # the roots see no archive: one block
            return self._make(n_roots - start)
        in_order = self.recorder.in_order
        assert in_order is not None
        applied_before = self.blocks.applied_before(start)
        in_order.release(applied_before)
        # The block is proposed only from exactly these outcomes, and only if they did not end the campaign.
        if in_order.frontier < applied_before or self._stop_reason() is not None:
            return []
        return self._make(self.blocks.size)

    def _make(self, n: int) -> list[Job]:
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
                given[agent_id] = runtime.read_agent(self.config.mutation.initial_agents[agent_id - 1])
            self.recorder.children[agent_id] = Child(None)
            proposals.append(Proposal(agent_id, None, operator, int(self.rng.integers(2**63))))
        n_children = n - len(proposals)
        if n_children > 0 and self.archive.size > 0:
            for child in self.offspring.make(self.rng, self.next_id + len(proposals), n_children, limit):
                self.recorder.children[child.proposal.id] = Child(child.proposal.parent_id, child.arm)
                proposals.append(child.proposal)
        if not proposals:
            return []
        for p in proposals:
            if p.parent_id is not None:
                self.lineage.note_child(p.parent_id, p.id)
            elif self.lineage.clades is not None:
                self.lineage.clades.note_proposed(p.id, None)
        with self.db.transaction():
            self.db.propose(proposals)
            # A given agent's genome is known now: it is stored at once and only evaluated later.
            self.db.record([Outcome(i, "mutated", files=files) for i, files in given.items()])
            self.db.update_run(state=self._driver_state())
        self.next_id += len(proposals)
        return proposal_jobs(proposals, self.jobs, given)

    def _drain(self, dispatcher: Dispatcher, grace: float) -> None:
        """Stop dispatching; give in-flight children up to ``grace`` seconds; the rest stay for resume."""
        deadline = time.monotonic() + grace
        while dispatcher.in_flight and time.monotonic() < deadline and self._stop_requested < 2:
            dispatcher.collect(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        if dispatcher.in_flight and self.progress is not None:
            why = "a second stop request" if self._stop_requested >= 2 else f"after {grace:g} s"
            self.progress.note(f"{why}: stopping now; {dispatcher.children_in_flight} children in flight are left "
                               "for resume")
        dispatcher.cancel_all()

    # ------------------------------------------------------------ reporting
    def standing(self) -> Standing:
        """Where the campaign stands now."""
        stats = self.archive.stats()
        return Standing(
            children_done=self.counters.done, children_failed=self.counters.failed,
            children_in_flight=self.dispatcher.children_in_flight if self.dispatcher is not None else 0,
            children_proposed=self.next_id, max_children=self.config.budget.max_children,
            archive_size=stats["size"], coverage=stats["coverage"], qd_score=stats["qd_score"],
            best_fitness=self.counters.best_fitness, mean_fitness=stats["mean_fitness"],
            elapsed_seconds=self._elapsed())

    def _snapshot(self) -> Standing:
        standing = self.standing()
        self.db.record_stats(**standing.stats_row())
        if self.progress is not None:
            self.progress.update(standing)
        return standing

    def _finish(self, status: str, stop_reason: str) -> Summary:
        standing = self._snapshot()
        self.db.update_run(status=status, state={**self.state, "elapsed_seconds": self._elapsed(),
                                                 "stop_reason": stop_reason})
        summary = Summary(**standing.as_dict(), db_path=str(self.db.path), status=status, stop_reason=stop_reason,
                          sandbox=self.sandbox_in_use,
                          children_pending=self.db.progress_counts()["pending"],
                          seconds=time.monotonic() - self._session_start)
        self.close()
        return summary

    def close(self) -> None:
        """Let go of the database and the campaign's lock (run() does this when it ends)."""
        self.db.close()
        self._lock.close()


def run_campaign(config: CampaignConfig, *, progress: Any = None) -> Summary:
    """Start a campaign (or continue the one already in ``config``'s database) and run it."""
    return Campaign(config, progress=progress).run()

