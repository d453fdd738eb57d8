"""The runner's side of the line: how both sandboxes start it, the job folder they hand it (one file,
job.json, with every agent's files in it), and its one-line JSON report read back as an :class:`EvalOutcome`.

The agents travel inside job.json (base64) rather than as a folder per agent: a batch of 32 maze children
as folders took 65 file-system entries to write and remove (~75 ms a batch on this machine's ext4, more
under load, against ~100 ms of simulation); as one file it takes two. The runner still reads a job whose
agents are folders (``agents`` without ``agent_files``)."""

from __future__ import annotations

import binascii
import json
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path, PurePosixPath

from openended.names import Files, genome_path_problem
from openended.sandbox.spec import EvalArgs, EvalOutcome, FailureKind, Limits

# The runner lives in the top-level `sandboxes` package (installed beside `openended`), with the image's Dockerfile.
RUNNER = Path(__file__).resolve().parent.parent.parent / "sandboxes" / "runner.py"
# Modules of the `sandboxes` package the runner and the evaluators import inside the sandbox, where
# nothing of openended is installed: the runner's source registers them from their text first (each after its
# imports).
IN_SANDBOX_MODULES = ("wire", "guard", "reaper", "cleanup", "precompiled", "agent_server", "agent", "model")

# Each module is compiled when first imported, not at start-up: the runner needs only `cleanup` and
# `precompiled`, and a fresh container or process pays for the rest (about 15 ms) only when an evaluator uses it.
_BOOTSTRAP = """import sys
class _InSandbox:
    sources = dict({sources!r})
    def find_spec(self, name, path=None, target=None):
        package, _, short = name.partition(".")
        if package == "sandboxes" and (not short or short in self.sources):
            from importlib.machinery import ModuleSpec
            return ModuleSpec(name, self, is_package=not short)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        short = module.__name__.partition(".")[2]
        if short:
            module.__source__ = self.sources[short]
            exec(compile(module.__source__, "sandboxes/" + short + ".py", "exec"), module.__dict__)
sys.meta_path.insert(0, _InSandbox())
del _InSandbox
"""


# A serving runner (a container's PID 1, many jobs) imports numpy once, before its first job: every
# evaluation is forked from it and inherits the import instead of paying for it (~170 ms of a maze batch's
# ~300 ms in a pool container under load; a task's own modules are still imported in each evaluation, from
# code the runner compiled once: sandboxes/precompiled.py). So with the standard library's modules the bundled
# evaluators import beyond what the runner and numpy load (argparse, dataclasses, pathlib: with the compiled
# code, a maze evaluation's import of its evaluator takes 2.3 ms of CPU instead of 12). numpy's global random
# state is re-seeded in each fork, as a fresh import would have seeded it.
# BLAS threads are capped at the container's CPU quota first: a thread of the runner counts against the
# container's pids limit. The runner's environment is left as it was; an evaluation clears its own anyway.
_PRELOAD = """
if "--serve" in sys.argv:
    import os as _os
    def _quota_cpus():
        for quota, period in (("/sys/fs/cgroup/cpu.max", None),
                              ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
            try:
                with open(quota) as fh:
                    words = fh.read().split()
                if period is not None:
                    with open(period) as fh:
                        words.append(fh.read().strip())
                if words[0] not in ("max", "-1"):
                    return max(1, -(-int(words[0]) // int(words[1])))
            except (OSError, ValueError, IndexError):
                pass
        return _os.cpu_count() or 1
    _set = [v for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if v not in _os.environ]
    for _v in _set:
        _os.environ[_v] = str(_quota_cpus())
    try:
        import numpy
        _os.register_at_fork(after_in_child=numpy.random.seed)
    except ImportError:
        pass
    for _m in ("argparse", "dataclasses", "pathlib"):
        __import__(_m)
    globals().pop("_m", None)
    for _v in _set:
        del _os.environ[_v]
    globals().pop("_v", None)
    del _os, _quota_cpus, _set
"""


@cache
def runner_source() -> str:
    """The source both sandboxes run with ``python3 -I -c``: the in-sandbox modules registered, numpy
    preloaded where the runner serves many jobs, then the runner."""
    sources = [(name, (RUNNER.parent / f"{name}.py").read_text()) for name in IN_SANDBOX_MODULES
               if (RUNNER.parent / f"{name}.py").exists()]
    return _BOOTSTRAP.format(sources=sources) + _PRELOAD + RUNNER.read_text()


# The runner a campaign's driver sent this node (openended.engine.node_files), run instead of this
# installation's own: the evaluators the driver sent import its in-sandbox modules.
_shipped_runner: str | None = None


def use_runner(source: str | None) -> None:
    """Run ``source`` (a :func:`runner_source` made elsewhere, e.g. by the driver) from now on; None: our own."""
    global _shipped_runner
    _shipped_runner = source


def runner_command(python: str, *args: str) -> list[str]:
    """The command line that runs the runner with ``args`` under ``python``."""
    return [python, "-I", "-c", _shipped_runner or runner_source(), *args]


def write_job(root: Path, agents: Sequence[Files], *, task_dir: str, args: EvalArgs, limits: Limits,
              work_root: str | None, model_socket: str | None = None) -> Path:
    """Write a job folder under ``root`` holding job.json, the agents' files in it (``agent_files``: one
    ``{relative path: base64}`` per agent; ``agents``: their names, how many there are); paths inside job.json
    are as the runner will see them (``model_socket``: the gateway's socket, given to the evaluation as
    ``$OPENENDED_MODEL_SOCKET``)."""
    inline = []
    for i, files in enumerate(agents):
        encoded = {}
        for rel, data in files.items():
            problem = genome_path_problem(rel)
            if problem:
                raise ValueError(f"agent {i}: {problem}")
            raw = data if isinstance(data, bytes) else str(data).encode()
            encoded[PurePosixPath(rel).as_posix()] = binascii.b2a_base64(raw, newline=False).decode("ascii")
        inline.append(encoded)
    job_dir = root / uuid.uuid4().hex
    job_dir.mkdir(parents=True)
    job = {"task_dir": task_dir, "agents": [f"agent{i}" for i in range(len(inline))], "agent_files": inline,
           "args": dict(args), "timeout_s": limits.timeout_s, "output_bytes": limits.output_bytes,
           "work_root": work_root}
    if model_socket is not None:
        job["model_socket"] = model_socket
    (job_dir / "job.json").write_text(json.dumps(job))
    job_dir.chmod(0o755)
    return job_dir


def parse_report(stdout: bytes, stderr: bytes, exit_status: int | None, seconds: float, *,
                 job: str | None = None) -> EvalOutcome:
    """The runner's one-line JSON report, or a sandbox_error saying why there is none.

    With ``job``, only a report naming that job folder counts (a serving runner's reports do)."""
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    if lines:
        try:
            report = json.loads(lines[-1])
        except (ValueError, RecursionError):
            report = None
        if isinstance(report, dict) and "failure_kind" in report and (job is None or report.get("job") == job):
            kind = report.get("failure_kind")
            results = report.get("results")
            if kind is None and not isinstance(results, list):
                kind, report["reason"] = FailureKind.SANDBOX_ERROR, "the runner reported neither results nor a failure"
            return EvalOutcome(
                results=results if kind is None else None,
                failure_kind=None if kind is None else FailureKind.parse(kind),
                reason=report.get("reason"),
                exit_status=report.get("exit_status"),
                seconds=float(report.get("seconds") or seconds),
                stdout_tail=report.get("stdout_tail") or "",
                stderr_tail=report.get("stderr_tail") or "",
                retire=report.get("retire") if isinstance(report.get("retire"), str) else None,
            )
    tail = stderr.decode("utf-8", "replace").strip()[-2000:]
    return EvalOutcome.failed(FailureKind.SANDBOX_ERROR, f"the runner gave no report (exit status {exit_status}): "
                              f"{tail.splitlines()[-1] if tail else 'no output'}", exit_status=exit_status,
                              seconds=seconds, stderr_tail=tail)
