"""The ``inprocess`` sandbox: the task's evaluate.py imported into this process and called directly.

No isolation and no limits beyond the campaign's per-task deadline: for benchmarks of the engine
and trusted evaluators. An exception of ``evaluate_batch`` (a SyntaxError in evaluate.py
included) is the batch's ``crash``; a result that is not one per agent is a ``bad_result``; an
agent caught tampering by ``sandboxes.agent`` (its ``ForgedResult``) is a ``forged_result``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from openended.names import Files
from openended.sandbox.spec import EvalArgs, EvalOutcome, FailureKind, SandboxSpec, short_error
from sandboxes.agent import ForgedResult

EvaluateBatch = Callable[[list[Files], EvalArgs], object]
# task folder -> its evaluate_batch, imported once per process
_EVALUATORS: dict[str, EvaluateBatch] = {}


def load_evaluator(task_root: str) -> EvaluateBatch:
    """Import the task's evaluate.py (once per process) and return its ``evaluate_batch``."""
    found = _EVALUATORS.get(task_root)
    if found is None:
        spec = importlib.util.spec_from_file_location(f"_openended_task_{abs(hash(task_root))}",
                                                      Path(task_root) / "evaluate.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {Path(task_root) / 'evaluate.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, task_root)  # evaluate.py may import its neighbours
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(task_root)
        found = _EVALUATORS[task_root] = cast(EvaluateBatch, module.evaluate_batch)
    return found


class InProcessSandbox:
    def __init__(self, spec: SandboxSpec, task_root: str):
        self.spec = spec
        self.task_root = str(task_root)

    def evaluate(self, agents: Sequence[Files], args: EvalArgs, *, gateway: str | None = None) -> EvalOutcome:
        if gateway is not None:
            return EvalOutcome.failed(FailureKind.SANDBOX_ERROR, "the inprocess sandbox cannot give an evaluation "
                                      "the model gateway (it shares this process's environment); use docker")
        started = time.perf_counter()
        try:
            # Imported here, not in __init__: a SyntaxError in evaluate.py fails this batch, not the worker.
            results = load_evaluator(self.task_root)(list(agents), args)
        except ForgedResult as exc:
            return EvalOutcome.failed(FailureKind.FORGED_RESULT, f"an agent tampered with its evaluation: {exc}",
                                      seconds=time.perf_counter() - started)
        except Exception as exc:
            return EvalOutcome.failed(FailureKind.CRASH, short_error(exc), seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        if not isinstance(results, list) or len(results) != len(agents):
            got = f"of length {len(results)}" if isinstance(results, list) else type(results).__name__
            reason = f"evaluate_batch returned {got} for {len(agents)} agent(s)"
            return EvalOutcome.failed(FailureKind.BAD_RESULT, reason, seconds=seconds)
        return EvalOutcome(results, seconds=seconds)

    def close(self) -> None:
        pass
