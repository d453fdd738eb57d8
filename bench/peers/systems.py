"""How each system runs one campaign on one task at a budget of model calls.

Ours: ``openended run`` with the task and nothing else but the seed, the model and a large children
budget (the default configuration), stopped (SIGINT) once ``calls`` children from model-calling operators
are done. The peers: each in a process of its own (a driver script written here, run by the peer's
interpreter), its model calls through a :class:`~peers.proxy.CountingProxy` that holds every call past
``calls``; the bench stops the peer once a call is held and no evaluation is under way.

Each returns ``events``: in order, the seed's evaluation and every child (``model_child``: made by a model
call; ``code``: its program or None; ``evaluated``; ``valid``; ``fitness``), with the calls, tokens and wall
time (start to the budget spent).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers import scoring
from peers.proxy import CountingProxy

OPENEVOLVE = ("openevolve", "0.4.1", "openevolve")       # (PyPI name, pinned version, module)
SHINKA = ("shinka-evolve", "0.0.7", "shinka")
TERMINAL = ("evaluated", "archived", "rejected", "failed")
CHILDREN_PER_CALL_CAP = 200


@dataclass
class Endpoint:
    """Where the model answers: an OpenAI-compatible base URL (a proxy adds the key) and the model's name.
    ``embedded``: our side starts the embedded model itself (``llm.local = true``), as by default."""

    base_url: str
    model: str
    api_key_env: str | None = None
    embedded: bool = False
    api: str = "chat"          # how our side speaks to a non-embedded endpoint
    peer_max_tokens: int | None = None  # None: each peer's documented value


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 20.0) -> None:
    """Signal the process's group, then kill it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _env(endpoint: Endpoint) -> dict[str, str]:
    """The environment of a system's process: never the key (the proxy adds it)."""
    env = {k: v for k, v in os.environ.items() if k != endpoint.api_key_env}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


# ---------------------------------------------------------------------------------------------- ours

def run_ours(task: str, seed: int, calls: int, endpoint: Endpoint, workdir: Path, *, sandbox: str | None = None,
             limit_s: float = 3600.0) -> dict[str, Any]:
    from openended.names import MODEL_OPERATORS

    db_path = workdir / "ours.db"
    # The run stops at ``calls`` model children; the children cap is only a backstop. tune's groups make about
    # 50 children a model call in the default portfolio, so a cap of 50 a call stopped ours short of its calls.
    lines = [f'task = "{task}"', f'db = "{db_path}"', f"seed = {seed}", "[budget]",
             f"max_children = {calls * CHILDREN_PER_CALL_CAP}"]
    if sandbox:
        lines += ["[sandbox]", f'kind = "{sandbox}"']
    proxy = None
    if endpoint.embedded:
        lines += ["[llm]", "local = true"]
    else:
        proxy = CountingProxy(endpoint.base_url, api_key_env=endpoint.api_key_env).start()
        lines += ["[llm]", f'models = [ {{ name = "endpoint", base_url = "{proxy.base_url}", '
                           f'model = "{endpoint.model}", api = "{endpoint.api}" }} ]']
    config = workdir / "ours.toml"
    config.write_text("\n".join(lines) + "\n")
    model_ops = tuple(MODEL_OPERATORS)
    marks = ",".join("?" * len(model_ops))
    started = time.monotonic()
    wall = None
    with open(workdir / "ours.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "openended", "run", str(config), "--quiet"], stdout=log,
                                stderr=subprocess.STDOUT, env=_env(endpoint), start_new_session=True)
    try:
        while proc.poll() is None and time.monotonic() - started < limit_s:
            time.sleep(1.0)
            if not db_path.exists():
                continue
            try:  # plain SQLite: the campaign's schema version is the writer's business
                with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0) as conn:
                    done = conn.execute(
                        f"SELECT COUNT(*) FROM agents WHERE operator IN ({marks}) AND status IN "
                        "('evaluated', 'archived', 'rejected', 'failed')", model_ops).fetchone()[0]
            except sqlite3.Error:  # the campaign is still creating its database
                continue
            if done >= calls:
                wall = time.monotonic() - started
                break
    finally:
        wall = wall if wall is not None else time.monotonic() - started
        _stop(proc, signal.SIGINT, wait_s=60.0)
        if proxy is not None:
            proxy.close()
    return _ours_events(db_path, task, calls, model_ops, wall)


def _ours_events(db_path: Path, task: str, calls: int, model_ops: tuple[str, ...], wall: float) -> dict[str, Any]:
    from archive_db import ArchiveDB

    code_file = scoring.code_file(task)
    events: list[dict[str, Any]] = []
    tokens_in = tokens_out = made = 0
    with ArchiveDB(db_path) as db:  # read-write: brought to this code's schema if need be
        rows = db.conn.execute(
            "SELECT id, operator, status, fitness, fail_stage, duplicate_of, genome_hash, tokens_in, tokens_out "
            "FROM agents WHERE status IN ('evaluated', 'archived', 'rejected', 'failed') "
            "ORDER BY finish_seq, id").fetchall()
        for agent_id, operator, status, fitness, fail_stage, duplicate_of, genome_hash, t_in, t_out in rows:
            model_child = operator in model_ops
            if model_child and made >= calls:
                break
            code = None
            if genome_hash is not None:
                files = db.agent_files(agent_id)
                if code_file in files:
                    code = files[code_file].decode("utf-8", "replace")
            evaluated = duplicate_of is None and (fitness is not None or fail_stage in
                                                  ("sandbox", "evaluation", "timeout", "invalid"))
            valid = status != "failed" and fitness is not None
            events.append({"model_child": model_child, "code": code, "evaluated": evaluated, "valid": valid,
                           "fitness": fitness if valid else None, "operator": operator})
            if model_child:
                made += 1
                tokens_in += t_in or 0
                tokens_out += t_out or 0
    return {"events": events, "calls": made, "tokens_in": tokens_in, "tokens_out": tokens_out, "wall_s": wall}


# --------------------------------------------------------------------------------------------- peers

def peer_python(package: tuple[str, str, str], cache: Path) -> str:
    """An interpreter with the peer at its pinned version: ours when it has it (the ``peers`` extra), else
    a virtual environment under ``cache`` made once (``--system-site-packages``: our packages are read
    from there, the peer's own pins installed over them inside the environment only)."""
    name, version, module = package
    probe = f"import importlib.metadata as m, {module}; assert m.version({name!r}) == {version!r}"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return sys.executable
    venv = cache / f"{name}-{version}"
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        print(f"installing {name}=={version} into {venv} (once)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"{name}=={version}"], check=True)
    return str(python)


_OPENEVOLVE_DRIVER = '''import asyncio, sys
from openevolve.config import load_config
from openevolve.controller import OpenEvolve
config = load_config(sys.argv[1])
controller = OpenEvolve(initial_program_path=sys.argv[2], evaluation_file=sys.argv[3], config=config,
                        output_dir=sys.argv[4])
asyncio.run(controller.run(iterations=int(sys.argv[5])))
'''

_SHINKA_DRIVER = '''import json, random, sys
import numpy as np
from shinka.core import EvolutionConfig, ShinkaEvolveRunner
from shinka.database import DatabaseConfig
from shinka.launch import LocalJobConfig
spec = json.load(open(sys.argv[1]))
random.seed(spec["seed"]); np.random.seed(spec["seed"])
runner = ShinkaEvolveRunner(evo_config=EvolutionConfig(**spec["evo"]),
                            job_config=LocalJobConfig(eval_program_path=spec["evaluator"]),
                            db_config=DatabaseConfig(**spec["db"]), verbose=False,
                            max_evaluation_jobs=1, max_proposal_jobs=1, max_db_workers=1)
runner.run()
'''


def openevolve_config(task: str, seed: int, model: str, base_url: str, max_tokens: int | None) -> dict[str, Any]:
    """OpenEvolve's documented configuration for the task: its circle-packing example's (examples/
    circle_packing/config_phase_1.yaml: full rewrites, 4 islands, population 60, archive 25, elite 0.3,
    exploitation 0.7, 3 top programs, temperature 0.7, top_p 0.95, 4 parallel evaluations); for binpack
    its defaults (diff-based evolution). The task statement is the system message."""
    llm = {"api_base": base_url, "api_key": "none", "primary_model": model, "temperature": 0.7, "top_p": 0.95,
           "max_tokens": max_tokens or 8192, "timeout": 600, "retries": 1}
    config: dict[str, Any] = {"random_seed": seed, "log_level": "WARNING", "checkpoint_interval": 1000, "llm": llm,
                              "prompt": {"system_message": scoring.prompt_text(task)},
                              "evaluator": {"timeout": 60, "cascade_evaluation": False}}
    if task == "circle-packing":
        config["prompt"].update({"num_top_programs": 3, "use_template_stochasticity": True})
        config["database"] = {"population_size": 60, "archive_size": 25, "num_islands": 4,
                              "elite_selection_ratio": 0.3, "exploitation_ratio": 0.7}
        config["evaluator"]["parallel_evaluations"] = 4
        config["diff_based_evolution"] = False
        config["allow_full_rewrites"] = True
    return config


def shinka_spec(task: str, seed: int, model: str, base_url: str, generations: int, max_tokens: int | None,
                evaluator: Path, results: Path, initial: Path) -> dict[str, Any]:
    """ShinkaEvolve's documented configuration for such a task (examples/circle_packing/run_evo.py: diff / full
    / cross patches 0.6 / 0.3 / 0.1, weighted parent selection (lambda 10), 2 islands, archive 40, 4 archive
    and 2 top-k inspirations, 3 patch attempts and resamples, temperatures 0 / 0.5 / 1, UCB1 over models),
    the task statement as its task message. Meta-recommendations, novelty judging and code embeddings are
    off: they need an embedding endpoint or extra model calls beyond the equal budget."""
    evo = {"task_sys_msg": scoring.prompt_text(task), "patch_types": ["diff", "full", "cross"],
           "patch_type_probs": [0.6, 0.3, 0.1], "num_generations": generations, "max_patch_resamples": 3,
           "max_patch_attempts": 3, "job_type": "local", "language": "python",
           "llm_models": [f"local/{model}@{base_url}"],
           "llm_kwargs": {"temperatures": [0.0, 0.5, 1.0], "max_tokens": max_tokens or 32768},
           "meta_rec_interval": None, "embedding_model": None, "novelty_llm_models": None,
           "llm_dynamic_selection": "ucb1", "llm_dynamic_selection_kwargs": {"exploration_coef": 1.0},
           "init_program_path": str(initial), "results_dir": str(results)}
    db = {"db_path": str(results / "evolution_db.sqlite"), "num_islands": 2, "archive_size": 40,
          "elite_selection_ratio": 0.3, "num_archive_inspirations": 4, "num_top_k_inspirations": 2,
          "migration_interval": 10, "migration_rate": 0.1, "island_elitism": True,
          "parent_selection_strategy": "weighted", "parent_selection_lambda": 10.0}
    return {"seed": seed, "evo": evo, "db": db, "evaluator": str(evaluator)}


def run_peer(peer: str, task: str, seed: int, calls: int, endpoint: Endpoint, workdir: Path, cache: Path, *,
             limit_s: float = 3600.0) -> dict[str, Any]:
    """Run OpenEvolve (``peer == "openevolve"``) or ShinkaEvolve (``"shinka"``) until ``calls`` model calls."""
    log = workdir / f"{peer}-evaluations.jsonl"
    initial = workdir / "initial.py"
    initial.write_text(scoring.marked_seed(task))
    with CountingProxy(endpoint.base_url, api_key_env=endpoint.api_key_env, budget=calls) as proxy:
        if peer == "openevolve":
            python = peer_python(OPENEVOLVE, cache)
            evaluator = scoring.write_openevolve_evaluator(workdir / "oe_evaluator.py", task, log)
            config = workdir / "openevolve.yaml"
            config.write_text(json.dumps(openevolve_config(task, seed, endpoint.model, proxy.base_url,  # JSON is YAML
                                                            endpoint.peer_max_tokens), indent=1))
            (workdir / "driver.py").write_text(_OPENEVOLVE_DRIVER)
            argv = [python, str(workdir / "driver.py"), str(config), str(initial), str(evaluator),
                    str(workdir / "openevolve_output"), str(calls)]
        elif peer == "shinka":
            python = peer_python(SHINKA, cache)
            evaluator = scoring.write_shinka_evaluator(workdir / "evaluate.py", task, log)
            spec = shinka_spec(task, seed, endpoint.model, proxy.base_url, calls + 1, endpoint.peer_max_tokens,
                               evaluator, workdir / "shinka_results", initial)
            (workdir / "shinka.json").write_text(json.dumps(spec))
            (workdir / "driver.py").write_text(_SHINKA_DRIVER)
            argv = [python, str(workdir / "driver.py"), str(workdir / "shinka.json")]
        else:
            raise ValueError(f"unknown peer {peer!r}")
        started = time.monotonic()
        wall = None
        with open(workdir / f"{peer}.log", "wb") as out:
            proc = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=_env(endpoint),
                                    start_new_session=True)
        try:
            while proc.poll() is None and time.monotonic() - started < limit_s:
                time.sleep(0.5)
                quiet_since = proxy.last_answer_at or started
                if log.exists():  # the last evaluation's end, on the monotonic clock
                    quiet_since = max(quiet_since, time.monotonic() - (time.time() - log.stat().st_mtime))
                if proxy.held and not scoring.busy(log) and time.monotonic() - quiet_since > 3.0:
                    wall = time.monotonic() - started
                    break
        finally:
            wall = wall if wall is not None else time.monotonic() - started
            _stop(proc)
        usage = proxy.snapshot()
    return _peer_events(task, log, usage, wall, peer, workdir)


def _peer_events(task: str, log: Path, usage: dict[str, int], wall: float, peer: str,
                 workdir: Path) -> dict[str, Any]:
    entries = scoring.read_log(log)
    answered = usage["answered"]
    events = []
    for i, entry in enumerate(entries[:1 + answered]):
        events.append({"model_child": i > 0, "code": entry["code"], "evaluated": True, "valid": entry["valid"],
                       "fitness": entry["fitness"], "operator": peer})
    children = max(0, len(events) - 1)
    # A call whose answer gave no program to evaluate (an edit that did not apply, no code block) is a
    # child too: invalid, with no program.
    for _ in range(answered - children):
        events.append({"model_child": True, "code": None, "evaluated": False, "valid": False, "fitness": None,
                       "operator": peer})
    if not entries:
        tail = (workdir / f"{peer}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{peer} evaluated nothing (not even its initial program); its log ends:\n{tail}")
    return {"events": events, "calls": answered, "tokens_in": usage["tokens_in"], "tokens_out": usage["tokens_out"],
            "wall_s": wall}
