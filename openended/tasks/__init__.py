"""Tasks: folders holding task.toml, seed/, evaluate.py and prompt.md.

A built-in task lives in this package (``maze``, with variants ``maze-medium`` and
``maze-hard``); a user's task is any folder with the same shape, named by its path.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from openended.genome_folder import GenomeFolderError, read_genome_folder
from openended.tasks.spec import TaskSpec, parse_task_spec

if TYPE_CHECKING:
    import numpy as np

BUILTIN_DIR = Path(__file__).parent


class TaskError(ValueError):
    """A task cannot be found or its task.toml is malformed."""


@dataclass(frozen=True)
class TaskRef:
    """What a worker needs to load a task: small enough to send with every Ray task."""

    path: str
    variant: str | None = None


@dataclass(frozen=True)
class TaskMap:
    """A task's map in the coordinates of its first two descriptors: wall segments (n, 4) as
    ``x1 y1 x2 y2``, the start and the goal (exit)."""

    walls: np.ndarray
    start: tuple[float, float]
    goal: tuple[float, float]
    path: Path


@dataclass(frozen=True)
class Task:
    """A loaded task: its validated task.toml (variant applied) and its folder."""

    name: str
    root: Path
    variant: str | None
    spec: TaskSpec = field(repr=False)

    @property
    def ref(self) -> TaskRef:
        return TaskRef(str(self.root), self.variant)

    @property
    def genome_kind(self) -> str:
        return self.spec.genome

    @property
    def descriptor_space(self) -> dict:
        """Descriptor names, bounds and bins in the shape of openended.qd.DescriptorSpace.from_dict."""
        descs = self.spec.descriptors
        if not descs:
            raise TaskError(f"task {self.name!r} ({self.root / 'task.toml'}) defines no descriptors")
        return {
            "names": [d.name for d in descs],
            "lower": [d.lower for d in descs],
            "upper": [d.upper for d in descs],
            "bins": [d.bins for d in descs],
        }

    @property
    def fitness_lower(self) -> float:
        return self.spec.floor

    @property
    def fitness_target(self) -> float | None:
        return self.spec.fitness.target

    @property
    def evaluate_args(self) -> dict:
        return dict(self.spec.evaluate_args)

    @property
    def limits(self) -> dict[str, float]:
        """The [limits] the task sets (the rest come from the sandbox's defaults)."""
        return self.spec.limits.model_dump(exclude_none=True)

    @property
    def batchable(self) -> bool:
        return self.spec.batchable

    @property
    def gateway(self) -> bool:
        """Whether its agents may call a model through the gateway (``gateway = true`` in task.toml)."""
        return self.spec.gateway

    @property
    def hidden_folders(self) -> tuple[str, ...]:
        """The scorer folders of its stages: no evaluation of an agent sees them (``SandboxSpec.hidden``)."""
        return tuple(sorted({s.scorer for s in self.spec.stages if s.scorer is not None}))

    def operator_params(self, operator: str) -> dict:
        return dict(self.spec.operators.get(operator, {}))

    def seed_files(self) -> dict[str, bytes]:
        """The initial agent: every file under seed/, keyed by its relative path."""
        seed = self.root / "seed"
        if not seed.is_dir():
            raise TaskError(f"task {self.name!r} has no seed/ folder at {seed}")
        try:
            return read_genome_folder(seed)
        except GenomeFolderError as exc:
            raise TaskError(f"task {self.name!r}: its seed: {exc}") from None

    def map(self) -> TaskMap | None:
        """The task's map, drawn under the archive heatmap: when its ``evaluate_args`` name one
        (``map = "medium"``) and its folder holds ``maps/<name>.txt`` in the maze format
        (``maze/maps/README.md``), else None; a TaskError naming the file when that file is malformed."""
        name = self.spec.evaluate_args.get("map")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self.root / "maps" / f"{name}.txt"
        if not path.is_file():
            return None
        from openended.tasks.maze.maze_sim import parse_maze  # the format's one parser (stdlib + numpy)

        try:
            maze = parse_maze(path.read_text(encoding="utf-8"), source=str(path))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise TaskError(f"task {self.name!r}: its map: {exc}") from None
        return TaskMap(walls=maze.walls, start=(float(maze.start[0]), float(maze.start[1])),
                       goal=(float(maze.goal[0]), float(maze.goal[1])), path=path)

    def prompt(self) -> str:
        path = self.root / "prompt.md"
        return path.read_text() if path.exists() else ""


def builtin_task_names() -> list[str]:
    """Names of the built-in tasks, variants spelled ``folder-variant``."""
    names: list[str] = []
    for toml in sorted(BUILTIN_DIR.glob("*/task.toml")):
        spec = tomllib.loads(toml.read_text())
        variants = spec.get("variants", {})
        if not variants or "default_variant" in spec:
            names.append(toml.parent.name)
        names.extend(f"{toml.parent.name}-{v}" for v in variants)
    return names


def load_task(name: str) -> Task:
    """Load a built-in task by name (``maze-hard``) or a user's task folder by path (``./mytask`` or
    ``./mytask:variant``). Every variant of the folder's task.toml is validated, not only the one asked for."""
    folder, variant = _resolve(name)
    toml_path = folder / "task.toml"
    text = toml_path.read_text()
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{toml_path}: invalid TOML: {exc}") from exc
    variants = spec.pop("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise TaskError(f"{toml_path}: key 'variants' must be a table of tables ([variants.NAME])")
    default = spec.pop("default_variant", None)  # the variant a name without one gets
    if default is not None and default not in variants:
        raise TaskError(f"{toml_path}: key 'default_variant': {default!r} is not one of its variants "
                        f"{sorted(variants)}")
    variant = variant or default
    for required in ("evaluate.py",):
        if not (folder / required).exists():
            raise TaskError(f"task folder {folder} has no {required}")
    parsed: dict[str | None, TaskSpec] = {}  # every variant validated: a typo in one is refused whichever is asked
    for v in variants or [None]:
        own: dict = variants[v] if v is not None else {}

        def locate(loc: tuple[int | str, ...], own: dict = own, v: str | None = v) -> str:
            return _where(text, loc, v if loc[0] in own else None)

        try:
            parsed[v] = parse_task_spec({**spec, **own}, str(toml_path) + (f" (variant {v})" if v else ""), locate)
        except ValueError as exc:
            raise TaskError(str(exc)) from None
    if variant is not None and variant not in variants:
        raise TaskError(f"task {folder.name!r} has no variant {variant!r}; variants in {toml_path}: {sorted(variants)}")
    if variant is None and variants:
        builtin = folder.resolve().parent == BUILTIN_DIR.resolve()
        asked = name.partition(":")[0]
        names = ", ".join(f"{folder.name}-{v}" if builtin else f"{asked}:{v}" for v in variants)
        raise TaskError(f"task {folder.name!r} needs a variant, one of: {names}")
    chosen = parsed[variant]
    if chosen.genome == "code" and (folder / "seed").is_dir() and not (folder / "seed" / chosen.code_file).is_file():
        raise TaskError(f"{toml_path}: key 'code_file': seed/{chosen.code_file} does not exist (the file the "
                        "operators edit; set code_file to one of the seed's files)")
    for stage in chosen.stages:  # a scorer's folder holds its own evaluator; its files stay out of the agent's sight
        if stage.scorer is not None and not (folder / stage.scorer / "evaluate.py").is_file():
            raise TaskError(f"{toml_path}: stage {stage.name!r}: key 'scorer': {folder / stage.scorer / 'evaluate.py'} "
                            "does not exist (a scorer is a folder of the task with its own evaluate.py)")
    base = chosen.name or folder.name
    display = f"{base}-{variant}" if variant else base
    return Task(name=display, root=folder.resolve(), variant=variant, spec=chosen)


def _where(text: str, loc: tuple[int | str, ...], variant: str | None) -> str:
    """Where the key at ``loc`` is written in task.toml's ``text``: its table and line(s), as far as a
    plain search for the key's last part finds it (a misspelt key is usually written once)."""
    key = str(loc[-1])
    pattern = re.compile(r"(?:^|[\s{,.\[])[\"']?" + re.escape(key) + r"[\"']?\s*(?:=|\]|\.)")
    lines = [i for i, line in enumerate(text.splitlines(), start=1)
             if pattern.search(line.split("#", 1)[0] if "#" in line and '"' not in line else line)]
    parts = [f"in [variants.{variant}]"] if variant is not None else []
    if 1 <= len(lines) <= 3:
        parts.append(("line " if len(lines) == 1 else "lines ") + ", ".join(map(str, lines)))
    return ", ".join(parts)


def _resolve(name: str) -> tuple[Path, str | None]:
    path_part, _, variant = name.partition(":")
    candidate = Path(path_part).expanduser()
    if (candidate / "task.toml").exists():
        return candidate, variant or None
    if (BUILTIN_DIR / name / "task.toml").exists():
        return BUILTIN_DIR / name, None
    folder, _, variant = name.rpartition("-")
    if folder and (BUILTIN_DIR / folder / "task.toml").exists():
        return BUILTIN_DIR / folder, variant
    raise TaskError(f"unknown task {name!r}: not a folder with task.toml (looked for "
                    f"{(candidate / 'task.toml').absolute()}; a relative path is from the current folder) and not "
                    f"a built-in ({', '.join(builtin_task_names())})")


def load_ref(ref: TaskRef) -> Task:
    """Load a task from a TaskRef (what workers receive)."""
    return load_task(f"{ref.path}:{ref.variant}" if ref.variant else ref.path)
