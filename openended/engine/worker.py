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
import traceback
from dataclasses import dataclass, field

import numpy as np
import ray

from openended.mutation import mutate
from openended.sandbox import EvalOutcome, SandboxSpec, get_sandbox
from openended.tasks import TaskRef, evaluator_module, load_ref

Files = dict[str, bytes]


@dataclass(frozen=True, slots=True)
class Job:
    """One child to produce: mutate ``parent_files`` with ``operator`` (seeded), or evaluate ``files`` as given."""

    agent_id: int
    seed: int
    operator: str
    params: dict = field(default_factory=dict)
    parent_files: Files | None = None
    files: Files | None = None  # set when the child was already mutated (resume): evaluate only
    # mutation only (code tasks): the driver records the genome before evaluation is dispatched
    mutate_only: bool = False
    model: object | None = None  # an openended.llm.ModelSpec for the LLM operators
    context: object | None = None  # an openended.mutation.prompts.MutationContext for the LLM operators
    templates_dir: str | None = None
    error: str | None = None  # the driver could not prepare this mutation: it fails without a call


@dataclass(slots=True)
class ChildResult:
    """What came back for one child: its genome, and a result dict or a failure."""

    agent_id: int
    files: Files | None = None
    result: dict | None = None
    fail_stage: str | None = None
    fail_reason: str | None = None
    eval_seconds: float = 0.0
    # what a foundation-model mutation spent (zero for the LLM-free operators)
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    # how the sandbox ran it (None for inprocess evaluation)
    evaluation: dict | None = None
    batch_failure: bool = False  # the whole batch failed in the sandbox: re-run its children alone


def _short_error(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last[:500]


def run_jobs(task_ref: TaskRef, jobs: list[Job], sandbox: SandboxSpec | None = None,
             evaluate_args: dict | None = None) -> list[ChildResult]:
    """Mutate (where needed) and evaluate every job; returns one ChildResult per job, in order."""
    try:
        task = load_ref(task_ref)
    except Exception as exc:  # e.g. the task folder is missing on this node
        return [ChildResult(j.agent_id, files=j.files, fail_stage="evaluation",
                            fail_reason=f"cannot load task: {_short_error(exc)}") for j in jobs]
    results: list[ChildResult] = []
    to_evaluate: list[ChildResult] = []
    for job in jobs:
        out = ChildResult(job.agent_id)
        results.append(out)
        if job.files is not None:
            out.files = job.files
        else:
            try:
                rng = np.random.default_rng(job.seed)
                out.files = mutate(job.operator, job.parent_files, rng, task, job.params)
            except Exception as exc:  # a bad mutation fails this child only
                out.fail_stage, out.fail_reason = "mutation", _short_error(exc)
                continue
        to_evaluate.append(out)
    if not to_evaluate:
        return results

    args = task.evaluate_args if evaluate_args is None else evaluate_args
    if sandbox is not None and sandbox.kind != "inprocess":
        _evaluate_sandboxed(sandbox, task, to_evaluate, args)
        return results
    started = time.perf_counter()
    try:
        module = evaluator_module(task)  # a SyntaxError in evaluate.py fails these children, not the worker
        evaluated = module.evaluate_batch([r.files for r in to_evaluate], args)
        if not isinstance(evaluated, list) or len(evaluated) != len(to_evaluate):
            raise ValueError(f"evaluate_batch returned {type(evaluated).__name__} of wrong length for {len(to_evaluate)} agents")
    except Exception as exc:
        for r in to_evaluate:
            r.fail_stage, r.fail_reason = "evaluation", _short_error(exc)
        return results
    per_child = (time.perf_counter() - started) / len(to_evaluate)
    for r, res in zip(to_evaluate, evaluated):
        r.result, r.eval_seconds = res, per_child
    return results


# Where each LLM operator's answer ends: the diff's closing marker, the rewritten program's closing fence.
STOP = {"llm_diff": ">>>>>>> REPLACE", "llm_rewrite": "\n```", "llm_crossover": "\n```"}


def mutate_job(task_ref: TaskRef, job: Job) -> ChildResult:
    """Make one child's genome (an LLM call or an LLM-free edit); usage is counted even when it fails."""
    from openended.llm import LLMError, complete
    from openended.mutation.llm_ops import LLM_OPERATORS, MutationFailed, llm_mutate

    out = ChildResult(job.agent_id)
    try:
        task = load_ref(task_ref)
        if job.operator in LLM_OPERATORS:
            out.model = job.model.name
            seed = job.seed % (2**31)
            stop = STOP[job.operator]

            def call(prompt: str):
                # Generation ends where the answer does; the stop string itself is not returned.
                completion = complete(job.model, prompt, seed=seed, stop=[stop])
                return dataclasses.replace(completion, text=completion.text + stop)

            child = llm_mutate(job.operator, job.context, call, templates_dir=job.templates_dir)
            out.files = child.files
            _usage(out, child.completion)
        else:
            out.files = mutate(job.operator, job.parent_files, np.random.default_rng(job.seed), task, job.params)
    except LLMError as exc:
        out.fail_stage, out.fail_reason = "mutation", f"model {job.model.name}: {exc.reason}"
        out.tokens_in, out.tokens_out, out.cost = exc.tokens_in, exc.tokens_out, exc.cost
    except MutationFailed as exc:
        out.fail_stage, out.fail_reason = "mutation", exc.reason
        _usage(out, exc.completion)
    except Exception as exc:  # noqa: BLE001 - a bad mutation fails this child only
        out.fail_stage, out.fail_reason = "mutation", _short_error(exc)
    return out


def _usage(out: ChildResult, completion) -> None:
    if completion is not None:
        out.tokens_in = int(getattr(completion, "tokens_in", 0) or 0)
        out.tokens_out = int(getattr(completion, "tokens_out", 0) or 0)
        out.cost = float(getattr(completion, "cost", 0.0) or 0.0)


def _evaluate_sandboxed(spec: SandboxSpec, task, children: list[ChildResult], args: dict) -> None:
    try:
        outcome = get_sandbox(spec, str(task.root)).evaluate([c.files for c in children], args)
    except Exception as exc:  # noqa: BLE001 - e.g. no Docker engine on this node
        outcome = EvalOutcome(None, "sandbox_error", _short_error(exc))
    per_child = outcome.seconds / len(children)
    evaluation = {"stage": "evaluate", "seconds": outcome.seconds, "exit_status": outcome.exit_status,
                  "failure_kind": outcome.failure_kind, "stdout_tail": outcome.stdout_tail,
                  "stderr_tail": outcome.stderr_tail}
    for i, child in enumerate(children):
        child.eval_seconds = per_child
        child.evaluation = evaluation
        if outcome.failure_kind is None:
            child.result = outcome.results[i]
        else:
            child.fail_stage = outcome.fail_stage
            child.fail_reason = f"{outcome.failure_kind}: {outcome.reason}"
            child.batch_failure = len(children) > 1


run_jobs_remote = ray.remote(num_cpus=1, max_retries=0)(run_jobs)
# A model call waits on the network or the local server, not on this node's CPU.
mutate_job_remote = ray.remote(num_cpus=0, max_retries=0)(mutate_job)
