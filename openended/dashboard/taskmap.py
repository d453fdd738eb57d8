"""The task's map, for drawing under the archive heatmap: walls, start and exit.

A task has a map when its ``evaluate_args`` name one (``map = "medium"``) and its folder holds
``maps/<name>.txt`` in the maze format (``openended/tasks/maze/maps/README.md``): the maze task's
``maze-medium`` and ``maze-hard``, or a user's task folder built the same way. Anything else, or a
task that no longer loads (a user's folder that moved), has no map; nothing here raises.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openended.tasks import Task

__all__ = ["TaskMap", "load_task_quietly", "task_map"]


@dataclass(frozen=True, slots=True)
class TaskMap:
    """A map in descriptor coordinates: ``walls`` as ``[x1, y1, x2, y2]`` segments, ``start`` and
    ``goal`` as ``[x, y]``; ``name`` is the map's file stem."""

    name: str
    walls: list[list[float]]
    start: list[float]
    goal: list[float]


@functools.lru_cache(maxsize=16)
def load_task_quietly(task: str) -> Task | None:
    """The task a run names (a built-in or a folder path), or None when it does not load."""
    from openended.tasks import load_task

    try:
        return load_task(task)
    except Exception:  # noqa: BLE001 - a task that moved or no longer parses just has no map
        return None


@functools.lru_cache(maxsize=16)
def task_map(task: str) -> TaskMap | None:
    """The map of the run's ``task`` (:meth:`openended.tasks.Task.map`) in JSON-ready form, or None
    when it has none or it does not load (see the module docstring)."""
    loaded = load_task_quietly(task)
    if loaded is None:
        return None
    try:
        found = loaded.map()
    except Exception:  # noqa: BLE001 - a broken map is not drawn; the heatmap still is
        return None
    if found is None:
        return None
    return TaskMap(name=found.path.stem, walls=[[float(v) for v in w] for w in found.walls.tolist()],
                   start=[float(v) for v in found.start], goal=[float(v) for v in found.goal])
