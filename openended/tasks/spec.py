"""``task.toml``, validated: every key a task may set, with its default, in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openended.keys import closest_key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DescriptorSpec(_Strict):
    """One behaviour descriptor: its name, bounds and number of bins on the measurement grid."""

    name: str
    lower: float
    upper: float
    bins: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> DescriptorSpec:
        if not self.upper > self.lower:
            raise ValueError(f"descriptor {self.name!r}: upper ({self.upper}) must be above lower ({self.lower})")
        return self


class FitnessSpec(_Strict):
    """The fitness scale: higher is better; ``lower`` is the floor the QD score counts from."""

    direction: Literal["max"] = "max"
    lower: float = 0.0
    upper: float | None = None
    target: float | None = None  # solved at or above this
    # an elite (grid, cvt archives) is replaced only by a child fitter by more than this; whatever it is, a
    # child must also be fitter by more than floating-point noise (openended.qd.archive.FLOAT_NOISE x |elite|)
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class LimitsSpec(_Strict):
    """Per-evaluation resource limits (the campaign's [sandbox] settings override them)."""

    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)


class StageSpec(_Strict):
    """One stage of a staged (cascade) evaluation: its evaluator arguments (merged over the task's), its
    limits (over the campaign's), whether its agent gets the gateway, and the rule a child must pass to
    go on to the next stage (both rules, when both are given; none: every valid result goes on)."""

    name: str = Field(min_length=1, max_length=100)
    evaluate_args: dict[str, Any] = {}
    limits: LimitsSpec = LimitsSpec()
    gateway: bool | None = None  # None: the task's gateway setting
    min_fitness: float | None = None  # go on only at or above this fitness
    beats: Literal["archive_median", "parent"] | None = None  # go on only above the reference's fitness
    # a folder of the task folder (its own evaluate.py and hidden files): the stage's evaluator only acts
    # (runs the agent, returns its outputs); a fresh sandbox of this folder, without the gateway, scores them
    scorer: str | None = None

    @model_validator(mode="after")
    def _scorer_path(self) -> StageSpec:
        from openended.names import genome_path_problem

        if self.scorer is not None:
            problem = genome_path_problem(self.scorer)
            if problem is not None or self.scorer.split("/")[0] == "seed":
                raise ValueError(f"stage {self.name!r}: scorer {self.scorer!r} must name a folder inside the task "
                                 f"folder, other than seed/ ({problem or 'seed/ holds the initial agent'})")
        return self


class TaskSpec(_Strict):
    """A task folder's ``task.toml`` after its variant is applied."""

    name: str | None = None
    description: str = ""
    genome: Literal["code", "params"] = "code"
    # code genomes: the file the operators edit (it must be in seed/), and the function the evaluator calls
    code_file: str = "main.py"
    entry_point: str | None = None
    # parameter genomes: a .npy file of param_count values; random roots ~ N(0, init_scale)
    params_file: str = "weights.npy"
    param_count: int | None = Field(default=None, ge=1)
    init_scale: float = 1.0
    initial_random: int = Field(default=0, ge=0)
    batchable: bool = False  # evaluate.py accepts many agents per call
    gateway: bool = False  # its agents may call a model through the gateway (openended.gateway); one per call
    fitness: FitnessSpec = FitnessSpec()
    fitness_lower: float | None = None  # a variant's own floor (overrides fitness.lower)
    limits: LimitsSpec = LimitsSpec()
    evaluate_args: dict[str, Any] = {}
    operators: dict[str, dict[str, Any]] = {}  # operator name -> its default parameters
    descriptors: list[DescriptorSpec] = []
    # staged evaluation: each child runs these in order and stops at the first whose rule it fails
    stages: list[StageSpec] = []
    # a child stopped before the last stage: false, stored (rejected) but kept out of the archive;
    # true, its partial fitness is final and goes to the archive like any other
    partial_is_final: bool = False

    @model_validator(mode="after")
    def _stages(self) -> TaskSpec:
        names = [s.name for s in self.stages]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"stages: two stages are named {name!r}; each stage needs a name of its own")
        if self.stages and self.batchable:
            raise ValueError("a task with stages evaluates one agent per call (a child's stage is its own): "
                             "batchable must be false")
        for i, stage in enumerate(self.stages):
            if stage.gateway and not self.gateway:
                raise ValueError(f"stages[{i}] ({stage.name!r}): gateway = true needs the task's gateway = true")
        if self.stages and (self.stages[-1].min_fitness is not None or self.stages[-1].beats is not None):
            raise ValueError(f"stages[{len(self.stages) - 1}] ({self.stages[-1].name!r}) is the last stage: "
                             "no stage follows it, so it takes no pass rule (min_fitness, beats)")
        return self

    @model_validator(mode="after")
    def _gateway_alone(self) -> TaskSpec:
        if self.gateway and self.batchable:
            raise ValueError("a task with the gateway evaluates one agent per call (its calls are that agent's): "
                             "batchable must be false")
        return self

    @model_validator(mode="after")
    def _genome_fields(self) -> TaskSpec:
        if self.genome == "params" and self.param_count is None:
            raise ValueError("a params genome needs param_count")
        return self

    @property
    def floor(self) -> float:
        """The lowest fitness the task can give (the QD score's offset)."""
        return self.fitness.lower if self.fitness_lower is None else self.fitness_lower


def describe_error(error: Any, locate: Callable[[tuple[int | str, ...]], str] | None = None) -> str:
    """One pydantic error of a task.toml as text: ``key 'limits.timout_s' (line 12): unknown key (did
    you mean 'timeout_s'?)``; ``locate`` says where the key is written (``loc`` is its path)."""
    loc = tuple(error["loc"])
    if not loc:
        return str(error["msg"])
    at = locate(loc) if locate is not None else ""
    key = f"key '{'.'.join(str(p) for p in loc)}'" + (f" ({at})" if at else "")
    if error["type"] != "extra_forbidden":
        return f"{key}: {error['msg']}"
    hint = closest_key(TaskSpec, loc, extra=("variants",))
    return f"{key}: unknown key" + (f" (did you mean '{hint}'?)" if hint else "")


def parse_task_spec(data: dict[str, Any], where: str,
                    locate: Callable[[tuple[int | str, ...]], str] | None = None) -> TaskSpec:
    """``data`` as a TaskSpec; a bad key or value is a ValueError naming ``where``, the key and (from
    ``locate``) where it is written; a misspelt key names the closest valid one."""
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: " + "; ".join(describe_error(e, locate) for e in exc.errors())) from None
