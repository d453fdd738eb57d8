"""``task.toml``, validated: every key a task may set, with its default, in one place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


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


class LimitsSpec(_Strict):
    """Per-evaluation resource limits (the campaign's [sandbox] settings override them)."""

    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)


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
    fitness: FitnessSpec = FitnessSpec()
    fitness_lower: float | None = None  # a variant's own floor (overrides fitness.lower)
    limits: LimitsSpec = LimitsSpec()
    evaluate_args: dict[str, Any] = {}
    operators: dict[str, dict[str, Any]] = {}  # operator name -> its default parameters
    descriptors: list[DescriptorSpec] = []

    @model_validator(mode="after")
    def _genome_fields(self) -> TaskSpec:
        if self.genome == "params" and self.param_count is None:
            raise ValueError("a params genome needs param_count")
        return self

    @property
    def floor(self) -> float:
        """The lowest fitness the task can give (the QD score's offset)."""
        return self.fitness.lower if self.fitness_lower is None else self.fitness_lower


def parse_task_spec(data: dict[str, Any], where: str) -> TaskSpec:
    """``data`` as a TaskSpec; a bad key or value is a ValueError naming the key and ``where``."""
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"key '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" if e["loc"] else e["msg"]
                             for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from None
