"""The shared scoring function: our built-in task's evaluator (``evaluate_batch``) on one program.

Every system's programs are scored by :func:`score`: ours inside the campaign's sandbox (the same
``evaluate_batch``), the peers' through the evaluator files written by :func:`write_openevolve_evaluator`
and :func:`write_shinka_evaluator`, which call :func:`score_logged` and append each result to a JSON-lines
log that the bench reads back (program, validity, fitness, seconds).
"""

from __future__ import annotations

import json
import os
import time
from functools import cache
from pathlib import Path
from typing import Any

from openended.mutation.normalise import normalise_file

BENCH_DIR = Path(__file__).resolve().parent.parent
# What a peer is told an invalid program scores: below every valid one (the task's fitness lower bound).
INVALID_SCORE = {"circle-packing": 0.0, "binpack": -150.0}


@cache
def _task(name: str) -> Any:
    from openended.tasks import load_task

    return load_task(name)


def code_file(task: str) -> str:
    return str(_task(task).spec.code_file)


def seed_code(task: str) -> str:
    task_obj = _task(task)
    return task_obj.seed_files()[task_obj.spec.code_file].decode("utf-8")


def prompt_text(task: str) -> str:
    """The task statement (the task's prompt.md), given to every system."""
    return (Path(_task(task).root) / "prompt.md").read_text(encoding="utf-8")


def score(task: str, code: str) -> dict[str, Any]:
    """``{"valid", "fitness", "feedback"}`` of one program, as our task's evaluator judges it."""
    from openended.sandbox.inprocess import load_evaluator

    task_obj = _task(task)
    files = {task_obj.spec.code_file: code.encode("utf-8")}
    result = load_evaluator(str(task_obj.root))([files], task_obj.evaluate_args)[0]
    valid = bool(result.get("valid", True)) and result.get("fitness") is not None
    return {"valid": valid, "fitness": float(result["fitness"]) if valid else None,
            "feedback": str(result.get("feedback") or "")}


def normalised(task: str, code: str) -> str:
    """The program up to formatting, comments and docstrings (our dedupe's normalisation)."""
    return normalise_file(code_file(task), code.encode("utf-8")).decode("utf-8", "replace")


def score_logged(task: str, code: str, log: str) -> dict[str, Any]:
    """:func:`score`, with the program and its result appended to ``log`` (one JSON line)."""
    started = time.monotonic()
    busy = Path(f"{log}.busy.{os.getpid()}")  # while it exists, an evaluation is under way
    busy.touch()
    try:
        result = score(task, code)
    finally:
        busy.unlink(missing_ok=True)
    entry = {**result, "code": code, "seconds": round(time.monotonic() - started, 3), "at": time.time()}
    with open(log, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return result


def busy(log: str | Path) -> bool:
    """Whether an evaluation logging to ``log`` is under way."""
    path = Path(log)
    return any(path.parent.glob(path.name + ".busy.*"))


def read_log(log: str | Path) -> list[dict[str, Any]]:
    path = Path(log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


_HEADER = '''# Written by bench/code_peers.py: {peer}'s evaluator, wrapping the shared scoring function.
import sys
sys.path.insert(0, {bench!r})
from peers.scoring import INVALID_SCORE, score_logged
TASK, LOG = {task!r}, {log!r}
'''

_OPENEVOLVE = '''
def evaluate(program_path):
    from openevolve.evaluation_result import EvaluationResult
    with open(program_path, encoding="utf-8") as f:
        result = score_logged(TASK, f.read(), LOG)
    fitness = result["fitness"] if result["valid"] else INVALID_SCORE[TASK]
    return EvaluationResult(metrics={"combined_score": fitness, "validity": float(result["valid"])},
                            artifacts={"feedback": result["feedback"]})
'''

_SHINKA = '''
import argparse, json, os

def main(program_path, results_dir):
    with open(program_path, encoding="utf-8") as f:
        result = score_logged(TASK, f.read(), LOG)
    os.makedirs(results_dir, exist_ok=True)
    fitness = result["fitness"] if result["valid"] else INVALID_SCORE[TASK]
    with open(os.path.join(results_dir, "correct.json"), "w") as f:
        json.dump({"correct": result["valid"], "error": None if result["valid"] else result["feedback"]}, f)
    with open(os.path.join(results_dir, "metrics.json"), "w") as f:
        json.dump({"combined_score": fitness, "public": {"valid": result["valid"]}, "private": {},
                   "text_feedback": result["feedback"]}, f)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--program_path", required=True)
    parser.add_argument("--results_dir", required=True)
    args = parser.parse_args()
    main(args.program_path, args.results_dir)
'''


def write_openevolve_evaluator(path: Path, task: str, log: Path) -> Path:
    path.write_text(_HEADER.format(peer="OpenEvolve", bench=str(BENCH_DIR), task=task, log=str(log)) + _OPENEVOLVE)
    return path


def write_shinka_evaluator(path: Path, task: str, log: Path) -> Path:
    path.write_text(_HEADER.format(peer="ShinkaEvolve", bench=str(BENCH_DIR), task=task, log=str(log)) + _SHINKA)
    return path


def marked_seed(task: str) -> str:
    """The seed program with both peers' EVOLVE-BLOCK markers around all of it."""
    return "# EVOLVE-BLOCK-START\n" + seed_code(task).rstrip("\n") + "\n# EVOLVE-BLOCK-END\n"
