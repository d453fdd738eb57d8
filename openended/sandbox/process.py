"""The ``process`` sandbox: the runner in a subprocess with rlimits, a timeout and a clean environment.

It limits time, memory, file size and output, and passes no host environment variables
(API keys stay out). It does NOT isolate: the child can read this machine's files and reach
the network (a scorer stage's hidden files included: the evaluation is given a copy of the task
folder without them, but nothing stops it from reading the original). Use it for trusted code
or where no Docker engine runs.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from openended.names import Files
from openended.sandbox.jobdir import parse_report, runner_command, write_job
from openended.sandbox.spec import EvalArgs, EvalOutcome, FailureKind, SandboxSpec, gateway_problem

# Address space is not resident memory: numpy and its BLAS reserve far more than they touch.
ADDRESS_SPACE_SLACK_MB = 1024
MAX_FILE_BYTES = 64 * 1024 * 1024


class ProcessSandbox:
    def __init__(self, spec: SandboxSpec, task_root: str):
        self.spec = spec
        self.task_root = str(task_root)
        self.root = Path(tempfile.mkdtemp(prefix="openended-process-"))
        if spec.hidden:  # a copy without them (no isolation, as said above: only out of the evaluation's sight)
            from openended.sandbox.engine import copy_task

            copy_task(task_root, self.root / "task", spec.hidden)
            self.task_root = str(self.root / "task")

    def _limit(self) -> None:  # runs in the child between fork and exec
        mem = (self.spec.limits.memory_mb + ADDRESS_SPACE_SLACK_MB) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def evaluate(self, agents: Sequence[Files], args: EvalArgs, *, gateway: str | None = None) -> EvalOutcome:
        limits = self.spec.limits
        problem = gateway_problem(agents, gateway)
        if problem:
            return EvalOutcome.failed(FailureKind.SANDBOX_ERROR, problem)
        job_dir = write_job(self.root, agents, task_dir=self.task_root, args=args, limits=limits,
                            work_root=str(self.root), model_socket=gateway)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                runner_command(sys.executable, str(job_dir)),
                capture_output=True, env={"PATH": "/usr/bin:/bin"}, cwd=str(self.root),
                timeout=limits.timeout_s + 10, preexec_fn=self._limit, start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return EvalOutcome.failed(FailureKind.TIMEOUT,
                                      f"no result within {limits.timeout_s:g}s (runner unresponsive); killed",
                                      seconds=time.monotonic() - started)
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        return parse_report(proc.stdout, proc.stderr, proc.returncode, time.monotonic() - started)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
