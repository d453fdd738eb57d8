"""What a campaign checks and holds before its loop starts: the config it runs with, its lock, its keys."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from archive_db import ArchiveDB, check_file, holds_run
from openended.config import CampaignConfig, ConfigError, validate_config
from openended.engine.ordering import deterministic_staleness
from openended.genome_folder import GenomeFolderError, read_genome_folder
from openended.names import (
    CODE_OPERATORS,
    LOCAL_MODEL,
    MODEL_OPERATORS,
    PARAMS_OPERATORS,
    SELF_IMPROVE,
    TUNE,
    WHOLE_PROGRAM_OPERATORS,
    Files,
)
from openended.qd import Archive, DescriptorSpace, make_archive
from openended.qd.archive import FLOAT_NOISE
from openended.sandbox import SandboxSpec, sweep
from openended.sandbox.spec import short_error
from openended.tasks import Task

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from openended.engine.recorder import Counters
    from openended.llm.local import LocalModelServer
    from openended.llm.spec import ModelSpec

# Settings a resumed campaign may change; anything else must match what the run started with.
RESUMABLE_OVERRIDES = ("max_in_flight", "batch_size", "ray_address", "grace_seconds", "stats_every_seconds", "budget",
                       "sandbox")


def resolve_operators(config: CampaignConfig, task: Task) -> CampaignConfig:
    """Fill in the operator(s) the task's kind calls for, and refuse operators it cannot use."""
    mutation = config.mutation
    has_model = config.llm.local or bool(config.llm.models)
    code = task.genome_kind == "code"
    operator, portfolio = mutation.operator, list(mutation.portfolio)
    if operator is None:
        if not code:
            operator = "gaussian"
        elif has_model and not portfolio:
            # the model proposes structure; tune judges it at its best constants (where tune can run). The
            # embedded model alone only edits: its whole programs (llm_rewrite, llm_crossover) hardly ever run
            # (0 valid of 15 rewrites of circle packing: cut off at their limit, or an edit to nothing).
            operator, portfolio = "llm_diff", ["llm_diff", "llm_rewrite", "llm_crossover", "ast", "tune"]
            if not config.llm.models:
                portfolio = [op for op in portfolio if op not in WHOLE_PROGRAM_OPERATORS]
            if task.gateway or task.spec.stages:
                portfolio.remove("tune")
        else:
            operator = portfolio[0] if portfolio else "ast"
    allowed = CODE_OPERATORS if code else PARAMS_OPERATORS
    for key, names in (("mutation.operator", [operator]), ("mutation.portfolio", portfolio)):
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ConfigError(f"key '{key}': task {task.name!r} has a {task.genome_kind} genome; operator(s) {bad} "
                              f"do not apply (use {', '.join(allowed)})")
        if not has_model and any(n in MODEL_OPERATORS for n in names):
            raise ConfigError(f"key '{key}': LLM operators need a model: set [llm] local = true (--llm local) "
                              "or add [[llm.models]]")
        if TUNE in names and (task.gateway or task.spec.stages):
            raise ConfigError(f"key '{key}': operator {TUNE} evaluates its children in its own task, without the "
                              f"model gateway or stages; task {task.name!r} uses "
                              f"{'the gateway' if task.gateway else '[[stages]]'}")
        if SELF_IMPROVE in names and not task.gateway:
            raise ConfigError(f"key '{key}': operator {SELF_IMPROVE} runs the parent agent, which calls a model "
                              f"through the gateway; task {task.name!r} does not ask for it (gateway = true in its "
                              "task.toml)")
    data = config.model_dump()
    data["mutation"].update(operator=operator, portfolio=portfolio)
    return validate_config(data, "campaign")


def merge_for_resume(stored: dict, given: CampaignConfig, db_path: Path) -> CampaignConfig:
    """The stored config, with the settings a resume may change taken from ``given`` where it set them."""
    merged = _upgrade(stored)
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


def _upgrade(stored: dict) -> dict:
    """A stored config in today's shape: keys that earlier versions wrote and no longer mean anything go."""
    upgraded = dict(stored)
    # Campaigns stored before the reproducible mode existed applied outcomes as they arrived.
    upgraded.setdefault("deterministic", False)
    llm = dict(upgraded.get("llm") or {})
    if "models" in llm:
        # `weight` was documented but never read (removed in schema 2's lifetime): dropping it changes nothing.
        llm["models"] = [{k: v for k, v in m.items() if k != "weight"} for m in llm["models"]]
        upgraded["llm"] = llm
    return upgraded


def check_api_keys(config: CampaignConfig) -> None:
    """Every model's key variable is set (its value is never read here)."""
    for i, m in enumerate(config.llm.models):
        if m.api_key_env and not os.environ.get(m.api_key_env):
            raise ConfigError(f"key 'llm.models[{i}].api_key_env': environment variable {m.api_key_env} "
                              f"(the key of model {m.name!r}) is not set")


def check_initial_agents(config: CampaignConfig) -> None:
    """Every initial agent is a folder of regular files (read once here, so a bad one fails before any file
    is made; it is read again when its turn comes)."""
    for i, folder in enumerate(config.mutation.initial_agents):
        if not Path(folder).is_dir():
            raise ConfigError(f"key 'mutation.initial_agents[{i}]': {folder!r} is not a folder")
        read_agent(folder)


def read_agent(folder: str) -> Files:
    """A user's initial agent: :func:`~openended.genome_folder.read_genome_folder`, its errors as config errors."""
    try:
        return read_genome_folder(folder)
    except GenomeFolderError as exc:
        raise ConfigError(f"key 'mutation.initial_agents': {exc}") from None


def check_database(path: Path, *, resume_only: bool) -> None:
    """Refuse an existing file before a lock file is made beside it or anything is written into it: one
    that is no campaign database (NotADatabaseError, NewerSchemaError) and, to resume, one with no campaign."""
    if not resume_only:
        check_file(path)
        return
    if holds_run(path) is False:
        start = f"start one with `openended run --db {path}`"
        if path.stat().st_size == 0:
            raise ConfigError(f"{path} is an empty file (0 bytes): it holds no campaign to resume; {start}")
        raise ConfigError(f"{path} holds no campaign to resume; {start}")


def lock_path(path: Path | str) -> Path:
    """The lock file of a campaign database: beside the file the path resolves to, so that a database
    reached through a symbolic link or another spelling of its path is locked once."""
    real = Path(path).resolve()
    return real.with_name(real.name + ".lock")


def lock_campaign(path: Path) -> IO[str]:
    """Hold an exclusive lock beside the database for this process's lifetime (the OS drops it on any exit)."""
    lock = open(lock_path(path), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"{path} is being run by another process; wait for it, or stop it first") from None
    return lock


def unlock_campaign(lock: IO[str], *, remove: bool) -> None:
    """Let go of the lock; ``remove``: delete the lock file too (a session refused before it began,
    that made the file itself: nothing is left beside a database it never ran)."""
    if remove:
        with contextlib.suppress(OSError):
            os.unlink(lock.name)
    lock.close()


def sweep_containers(sandbox: SandboxSpec) -> None:
    """Remove this campaign's containers left by an earlier session (e.g. after a kill -9) or by this one. An
    engine that does not answer keeps them: a warning says so, and the next session's sweep removes them."""
    if sandbox.kind != "docker":
        return
    try:
        sweep(sandbox.campaign_label)
    except Exception as exc:  # e.g. the engine stopped: the campaign's own outcome stands
        log.warning("could not remove this campaign's sandbox containers (label %s): %s", sandbox.campaign_label,
                    short_error(exc))


def check_budget_left(given: CampaignConfig, counters: Counters, elapsed: float, *, pending: int,
                      db_path: Path) -> None:
    """A budget given to a resumed campaign that it has already spent is an error naming both numbers,
    not a session that "finishes" at once after Ray's start-up."""
    budget = given.model_dump(exclude_unset=True).get("budget", {})
    finished = counters.done + counters.failed
    spent: dict[str, tuple[float, str | None, str]] = {  # key: (spent so far, its flag, how much in words)
        "max_children": (finished, "--budget", f"the {finished} children this campaign has already finished"),
        "max_wall_seconds": (elapsed, "--max-seconds", f"the {elapsed:.1f} seconds this campaign has already run"),
        "max_tokens": (counters.tokens, "--max-tokens",
                       f"the {counters.tokens} tokens this campaign has already spent"),
        "max_cost": (counters.cost, None, f"the {counters.cost:.4g} this campaign has already spent"),
    }
    for key, (used, flag, words) in spent.items():
        limit = budget.get(key)
        if limit is None or limit > used:
            continue
        name = f"budget.{key} = {limit}" if flag is None else f"{flag} {limit} (budget.{key})"
        hint = "give a larger one"
        if key == "max_children" and pending:
            hint += f", or leave it out to finish the {pending} children left in flight"
        raise ConfigError(f"{db_path}: {name} is not above {words}; {hint}")


def new_archive(config: CampaignConfig, task: Task) -> Archive:
    """The campaign's empty archive, or a config error naming ``archive.params``."""
    try:
        return make_archive(config.archive.kind, space=DescriptorSpace.from_dict(task.descriptor_space),
                            fitness_offset=task.fitness_lower, seed=config.seed,
                            tolerance=task.spec.fitness.tolerance, noise=FLOAT_NOISE, **config.archive.params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"key 'archive.params': {exc}") from None


def create_run(db: ArchiveDB, config: CampaignConfig, task: Task, archive: Archive) -> CampaignConfig:
    """Write a new campaign's run row (config, seed RNG, archive, roots); the config as stored."""
    if config.deterministic and config.staleness is None:
        # fixed for the campaign's life: a resume with another max_in_flight is the same campaign
        per_task = config.batch_size if task.batchable else 1
        config = config.model_copy(update={"staleness": deterministic_staleness(
            max_in_flight=config.max_in_flight, per_task=per_task)})
    initial_random = config.mutation.initial_random
    if initial_random is None:
        initial_random = task.spec.initial_random if task.genome_kind == "params" else 0
    state = {
        "rng": np.random.default_rng(config.seed).bit_generator.state,
        "archive": archive.state(),
        "n_given": len(config.mutation.initial_agents),
        "n_roots": 1 + len(config.mutation.initial_agents) + initial_random,
        "elapsed_seconds": 0.0,
    }
    db.create_run(name=f"{task.name}-seed{config.seed}", task=config.task, seed=config.seed,
                  config=config.model_dump(), descriptor_schema=archive.schema(), state=state)
    return config


def start_embedded_model(config: CampaignConfig, progress: Any = None) -> LocalModelServer | None:
    """The embedded model's server, started, when the config asks for it (``llm.local``); else None."""
    if not config.llm.local:
        return None
    from openended.llm.local import LocalModelServer

    server = LocalModelServer()
    try:
        server.start()
    except (RuntimeError, FileNotFoundError) as exc:  # it did not start, or crashed on its first token
        raise ConfigError(f"key 'llm.local': the embedded model could not start: {exc}") from None
    if progress is not None:
        progress.note(f"embedded model {LOCAL_MODEL} serving at {server.base_url} "
                      f"(started in {server.startup_seconds:.1f}s)")
    return server


def model_specs(config: CampaignConfig, server: LocalModelServer | None) -> dict[str, ModelSpec]:
    """The specs of every model the campaign may call, by name: the embedded one (if ``server``) and the config's."""
    from openended.llm.local import local_spec
    from openended.llm.spec import ModelSpec

    specs = {}
    if server is not None:
        specs[LOCAL_MODEL] = local_spec(server, max_tokens=config.llm.local_max_tokens)
    for m in config.llm.models:
        specs[m.name] = ModelSpec(**m.model_dump(exclude={"max_output"}))  # the operators' limits: per job
    return specs
