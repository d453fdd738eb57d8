"""The remote side of a campaign: mutate and evaluate a batch of children in one Ray task.

Only ids, seeds, operator names and small genomes cross Ray. Evaluation goes through the
campaign's sandbox (docker, process or inprocess; see openended.sandbox). A failure of a
whole sandboxed batch (a timeout, out of memory, a crash) comes back marked ``batch_failure``
and the driver re-runs that batch one child at a time, so only the culprit fails; so does a
crash of the whole worker process.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import numpy as np

from openended.engine.jobs import ChildResult, EngineLost, EvalJob, Evaluate, Mutate, Tune
from openended.engine.node_files import load_ref, local_path  # what the driver shipped, cached on this node
from openended.engine.nodes import tag_node, this_node_id
from openended.gateway.relay import local_socket  # the driver's gateway socket, relayed on other nodes
from openended.mutation import mutate
from openended.names import LLM_OPERATORS, SELF_IMPROVE, Files
from openended.results import Bounds, InvalidResult, check_acting, check_result
from openended.sandbox import EvalArgs, EvalOutcome, FailureKind, SandboxSpec, get_sandbox
from openended.sandbox.engine import docker_problem
from openended.sandbox.spec import EvaluationRecord, short_error
from openended.tasks import Task, TaskRef

if TYPE_CHECKING:
    from openended.llm import ModelSpec


@tag_node  # each result names the node that ran it (the campaign counts children per node)
def run_jobs(task_ref: TaskRef, jobs: list[EvalJob], sandbox: SandboxSpec | None = None,
             evaluate_args: dict | None = None) -> list[ChildResult]:
    """Mutate (where needed) and evaluate every job; returns one ChildResult per job, in order."""
    try:
        task = load_ref(task_ref)
    except Exception as exc:  # e.g. the task folder is missing on this node
        return [ChildResult(j.agent_id, files=j.files if isinstance(j, Evaluate) else None, fail_stage="evaluation",
                            fail_reason=f"cannot load task: {short_error(exc)}") for j in jobs]
    if len(jobs) == 1 and isinstance(jobs[0], Tune):
        return run_tune(task, jobs[0], sandbox or SandboxSpec(kind="inprocess"), evaluate_args)
    results: list[ChildResult] = []
    to_evaluate: list[ChildResult] = []
    for job in jobs:
        out = ChildResult(job.agent_id)
        results.append(out)
        if isinstance(job, Evaluate):
            out.files = job.files
        elif isinstance(job, Tune):  # the dispatcher sends a Tune alone: never in a batch
            out.fail_stage, out.fail_reason = "internal", "a tune job was sent in a batch"
            continue
        else:
            try:
                rng = np.random.default_rng(job.seed)
                out.files = mutate(job.operator, job.parent_files, rng, task, job.params)
            except Exception as exc:  # a bad mutation fails this child only
                out.fail_stage, out.fail_reason = "mutation", short_error(exc)
                continue
        to_evaluate.append(out)
    if not to_evaluate:
        return results

    args = task.evaluate_args if evaluate_args is None else evaluate_args
    first = jobs[0]
    assert not isinstance(first, Tune), "a tune job returned above"
    gateway = first.gateway if len(jobs) == 1 else None
    spec = sandbox or SandboxSpec(kind="inprocess")
    stages = task.spec.stages
    if stages and len(jobs) == 1:  # a staged task (never batchable): this job's stage decides
        stage = stages[min(first.stage, len(stages) - 1)]
        args = {**args, **stage.evaluate_args}
        limits = {k: v for k, v in stage.limits.model_dump().items() if v is not None}
        if limits:
            spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, **limits))
        if not (task.spec.gateway if stage.gateway is None else stage.gateway):
            gateway = None
        spec = dataclasses.replace(spec, hidden=task.hidden_folders)  # no agent sees a scorer's files
        with local_socket(gateway) as socket_path:
            _evaluate_sandboxed(spec, str(task.root), to_evaluate, args, socket_path)
        if stage.scorer is not None:
            _score(spec, str(task.root / stage.scorer), to_evaluate, args)
        for child in to_evaluate:  # each stage is its own row in the store (in-process ones included)
            record = child.evaluation or EvaluationRecord(seconds=child.eval_seconds)
            child.evaluation = dataclasses.replace(record, stage=stage.name)
        return results
    with local_socket(gateway) as socket_path:
        _evaluate_sandboxed(spec, str(task.root), to_evaluate, args, socket_path)
    return results


def run_tune(task: Task, job: Tune, spec: SandboxSpec, evaluate_args: dict | None = None) -> list[ChildResult]:
    """The ``tune`` operator's search (openended.mutation.tune): rounds of candidates, each round evaluated
    (as one batch where the task allows) before the next is made; returns the results of ``job.report``."""
    from openended.mutation.tune import TuneParams, TuneSearch

    children = {i: ChildResult(i) for i in range(job.first_id, job.first_id + job.count)}
    try:
        if job.parent_files is None:
            raise ValueError("tune needs a parent")
        search = TuneSearch(job.parent_files, task.spec.code_file, job.parent_fitness, TuneParams.of(job.params),
                            job.tolerance)
    except (ValueError, SyntaxError) as exc:  # nothing to tune, or code that does not parse
        return job.failed("mutation", f"tune: {exc}" if isinstance(exc, ValueError) else f"tune: {short_error(exc)}")
    args = task.evaluate_args if evaluate_args is None else evaluate_args
    # What the search reads of a result is checked as the driver checks it: a child cannot steer it with
    # a malformed or out-of-bounds fitness (the driver checks every result again, whatever the search read).
    bounds = Bounds(fitness_lower=task.fitness_lower, fitness_upper=task.spec.fitness.upper)
    n_descriptors = len(task.spec.descriptors)
    ids = list(children)
    per_round = search.params.batch
    for start in range(0, len(ids), per_round):
        members = [children[i] for i in ids[start:start + per_round]]
        seeds = [job.seed + i - job.first_id for i in ids[start:start + per_round]]
        for child, files in zip(members, search.round(seeds), strict=True):
            child.files = files
        groups = [members] if task.batchable else [[c] for c in members]
        for group in groups:
            _evaluate_sandboxed(spec, str(task.root), group, args)
            if len(group) > 1 and any(c.batch_failure for c in group):  # find the culprit: each alone
                for child in group:
                    child.result = child.fail_stage = child.fail_reason = None
                    child.batch_failure = False
                    _evaluate_sandboxed(spec, str(task.root), [child], args)
        search.tell([_fitness(c, n_descriptors, bounds) for c in members])
    return [children[i] for i in job.report]


def _fitness(child: ChildResult, n_descriptors: int, bounds: Bounds) -> float | None:
    if child.failed:
        return None
    try:
        return check_result(child.result, n_descriptors, bounds).fitness
    except InvalidResult:
        return None


def _score(spec: SandboxSpec, scorer_root: str, children: list[ChildResult], args: EvalArgs) -> None:
    """A scorer stage's second half: each child's outputs, as its acting evaluation returned them, scored by
    the scorer folder's evaluator in a sandbox of its own (fresh containers, no gateway) that no agent ran in.
    The scorer's result is the stage's; the acting metrics and feedback come under the scorer's."""
    scoring = dataclasses.replace(spec, gateway=False, hidden=(), mode="fresh")
    for child in children:
        if child.failed:
            continue
        acting_record, acting_seconds = child.evaluation, child.eval_seconds
        try:
            acted = check_acting(child.result)
        except InvalidResult as exc:
            child.fail_stage, child.fail_reason = "invalid", f"{FailureKind.BAD_RESULT}: {exc}"
            continue
        child.result = None
        _evaluate_sandboxed(scoring, scorer_root, [child], args, label="scorer", agents=[acted.outputs])
        if isinstance(child.result, dict):
            metrics = child.result.get("metrics")
            feedback = child.result.get("feedback")
            child.result = {**child.result,
                            "metrics": {**acted.metrics, **metrics} if isinstance(metrics, dict) else metrics,
                            "feedback": "\n".join(t for t in (feedback, acted.feedback) if isinstance(t, str) and t)}
        child.eval_seconds += acting_seconds
        if acting_record is not None and child.evaluation is not None:
            child.evaluation = _joined(acting_record, child.evaluation)


def _joined(acting: EvaluationRecord, scoring: EvaluationRecord) -> EvaluationRecord:
    """One stage's record from its two evaluations: the scorer's status, both runs' time and output."""
    def both(a: str, b: str) -> str:
        return f"{a}\n--- scorer ---\n{b}" if a and b else a or b

    return dataclasses.replace(scoring, seconds=acting.seconds + scoring.seconds,
                               stdout_tail=both(acting.stdout_tail, scoring.stdout_tail),
                               stderr_tail=both(acting.stderr_tail, scoring.stderr_tail))


# Where each LLM operator's answer ends: the diff's closing marker, the rewritten program's closing fence.
STOP = {"llm_diff": ">>>>>>> REPLACE", "llm_rewrite": "\n```", "llm_crossover": "\n```"}


def mutate_job(task_ref: TaskRef, job: Mutate, model: ModelSpec | None, sandbox: SandboxSpec) -> ChildResult:
    """Make one child's genome (an LLM call, a self-edit, or an LLM-free edit); usage is counted even when it
    fails (a self-edit's gateway calls by the gateway's lease, on the driver)."""
    from openended.llm import LLMError, complete
    from openended.mutation.llm_ops import MutationFailed, llm_mutate
    from openended.mutation.self_improve import SelfImproveFailed

    out = ChildResult(job.agent_id)
    try:
        task = load_ref(task_ref)
        if job.operator == SELF_IMPROVE:
            if model is None or job.context is None:
                raise ValueError(f"operator {job.operator} needs a model and a prompt context")
            out.model = model.name
            out.files = _self_improve(task, job, model, sandbox, out)
        elif job.operator in LLM_OPERATORS:
            if model is None or job.context is None:
                raise ValueError(f"operator {job.operator} needs a model and a prompt context")
            out.model = model.name
            seed = job.seed % (2**31)
            stop = STOP[job.operator]
            spec = model if job.max_tokens is None else dataclasses.replace(model, max_tokens=job.max_tokens)

            def call(prompt: str):
                # Generation ends where the answer does; the stop string itself is not returned. An answer
                # cut off by max_tokens did not reach it: it stays open, and llm_mutate fails it as truncated.
                completion = complete(spec, prompt, seed=seed, stop=[stop])
                if completion.truncated:
                    return completion
                return dataclasses.replace(completion, text=completion.text + stop)

            child = llm_mutate(job.operator, job.context, call, templates_dir=local_path(job.templates_dir))
            out.files = child.files
            _usage(out, child.completion)
        else:
            out.files = mutate(job.operator, job.parent_files, np.random.default_rng(job.seed), task, job.params)
    except LLMError as exc:
        out.fail_stage, out.fail_reason = "mutation", f"model {job.model}: {exc.reason}"
        out.tokens_in, out.tokens_out, out.cost = exc.tokens_in, exc.tokens_out, exc.cost
    except MutationFailed as exc:
        out.fail_stage, out.fail_reason = "mutation", exc.reason
        _usage(out, exc.completion)
    except SelfImproveFailed as exc:
        out.fail_stage, out.fail_reason = "mutation", f"self_improve: {exc}"
    except Exception as exc:  # a bad mutation fails this child only
        out.fail_stage, out.fail_reason = "mutation", short_error(exc)
    return out


def _self_improve(task: Task, job: Mutate, model: ModelSpec, sandbox: SandboxSpec, out: ChildResult) -> Files:
    """Diagnose the parent with ``model`` (its tokens on ``out``), then let it edit its own code."""
    from openended.llm import complete
    from openended.mutation.self_improve import (
        DEFAULT_DIAGNOSIS_TOKENS,
        Diagnosis,
        diagnosis_prompt,
        self_edit,
        statement_for,
    )
    from sandboxes.model import usage

    assert job.context is not None and job.parent_files is not None
    tokens = int(job.params.get("diagnosis_tokens", DEFAULT_DIAGNOSIS_TOKENS))
    prompt, began = diagnosis_prompt(job.context), time.monotonic()
    diagnosis = complete(dataclasses.replace(model, max_tokens=tokens), prompt, seed=job.seed % (2**31),
                         stop=["\n\n\n"])
    _usage(out, diagnosis)
    out.diagnosis = Diagnosis(model.name, prompt, diagnosis.text, out.tokens_in, out.tokens_out, out.cost,
                              round(time.monotonic() - began, 3))
    statement = statement_for(diagnosis.text, task.spec.code_file)
    with local_socket(job.gateway) as socket_path:
        return self_edit(task, job.parent_files, statement, sandbox, socket_path, job.params,
                         usage=lambda path: usage(socket_path=path), editor=job.editor_files)


def _usage(out: ChildResult, completion) -> None:
    if completion is not None:
        out.tokens_in = int(getattr(completion, "tokens_in", 0) or 0)
        out.tokens_out = int(getattr(completion, "tokens_out", 0) or 0)
        out.cost = float(getattr(completion, "cost", 0.0) or 0.0)


def _evaluate_sandboxed(spec: SandboxSpec, task_root: str, children: list[ChildResult], args: EvalArgs,
                        gateway: str | None = None, *, label: str | None = None,
                        agents: list[Files] | None = None) -> None:
    """Evaluate the children as one batch in the spec's sandbox of the task folder ``task_root``; fill in each
    one's result or failure (a failure's reason starts with ``label``, when given, after its kind).
    ``agents``: what the evaluator is given for each child instead of its genome (a scorer: its outputs).
    Raises :class:`EngineLost` when the docker sandbox failed because this node's engine is gone."""
    try:
        box = get_sandbox(spec, task_root)
        files = agents if agents is not None else [c.files or {} for c in children]
        outcome = box.evaluate(files, args) if gateway is None else box.evaluate(files, args, gateway=gateway)
    except Exception as exc:  # e.g. no Docker engine on this node
        outcome = EvalOutcome.failed(FailureKind.SANDBOX_ERROR, short_error(exc))
    if label is not None and outcome.failure_kind is not None:
        outcome.reason = f"{label}: {outcome.reason}"
    if outcome.failure_kind is FailureKind.SANDBOX_ERROR and spec.kind == "docker":
        problem = docker_problem(spec.image)
        if problem is not None:  # the node's engine, not these children: the driver sends them elsewhere
            raise EngineLost(this_node_id(), problem)
    # In-process evaluation keeps no record of how it ran, and a failed batch fails every child
    # (it has no limits that one child could hit for all): as before it went through the sandbox.
    contained = spec.kind != "inprocess"
    record = outcome.record() if contained else None
    per_child = outcome.seconds / len(children)
    for i, child in enumerate(children):
        child.eval_seconds = per_child
        child.evaluation = record
        if outcome.failure_kind is None and outcome.results is not None:
            child.result = outcome.results[i]
        else:
            child.fail_stage, child.fail_reason = outcome.fail_stage, outcome.fail_reason
            child.batch_failure = contained and len(children) > 1
