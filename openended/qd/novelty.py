"""Archives where every member is its own cell (cell = member index 0, 1, 2, ...).

``novelty``
    Novelty search (Lehman & Stanley 2011). A child is admitted when its novelty is >= the current
    threshold (the first child always is). See :class:`NoveltyArchive` for the adaptive-threshold rule.
``all``
    Darwin Gödel Machine: every valid child is admitted as its own cell.

Statistics are measured on the space's measurement grid (its bins).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from openended.qd.archive import AddResult, Archive
from openended.qd.space import MeasurementGrid, SpaceLike, check_fitness, check_int

__all__ = ["AllArchive", "NoveltyArchive", "NoveltyParams", "OwnCellArchive"]


class OwnCellArchive(Archive):
    """Shared by novelty and all: each member its own cell (cell = member index); grid stats."""

    def __init__(self, *, space: SpaceLike, fitness_offset: float, k: int = 15,
                 _edges: Sequence[Sequence[float]] | None = None, **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, **kind_params)
        self._grid = MeasurementGrid(_edges) if _edges is not None else MeasurementGrid.from_space(self.space)
        self._set_measure(self._grid)

    def _admit(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        cell = self.size
        self._append(agent_id, fitness, x, novelty, cell, self._grid.cell(x))
        return AddResult("new_cell", novelty, cell, None)

    def _check_restored_cells(self, cells: np.ndarray) -> None:
        if not np.array_equal(cells, np.arange(len(cells))):
            raise ValueError(f"{self.kind} archive elites must occupy cells 0..{len(cells) - 1}")

    def _kind_schema(self) -> dict[str, Any]:
        return {"edges": self._grid.edge_lists()}


@dataclass(frozen=True)
class NoveltyParams:
    """The adaptive-threshold rule's parameters (in schema order)."""

    threshold: float
    stagnation: int
    lower_factor: float
    window: int
    admit_limit: int
    raise_factor: float


class NoveltyArchive(OwnCellArchive):
    """Novelty-search archive with an adaptive threshold (Lehman & Stanley 2011).

    A child is admitted when its novelty >= ``threshold`` (default 6.0, descriptor units), or when the
    archive is empty. After every evaluation:

    * no admission for ``stagnation`` (default 500) consecutive evaluations: threshold *= ``lower_factor``
      (default 0.95) and the stagnation count restarts;
    * more than ``admit_limit`` (default 4) admissions within the current window of ``window``
      (default 100) evaluations: threshold *= ``raise_factor`` (default 1.2) and a new window starts;
      otherwise a new window starts every ``window`` evaluations.

    The current threshold and counters are in :meth:`state`.
    """

    kind = "novelty"

    def __init__(self, *, space: SpaceLike, fitness_offset: float, k: int = 15,
                 threshold: float = 6.0, stagnation: int = 500, lower_factor: float = 0.95, window: int = 100,
                 admit_limit: int = 4, raise_factor: float = 1.2, _edges: Sequence[Sequence[float]] | None = None,
                 **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, _edges=_edges, **kind_params)
        t = check_fitness(threshold)
        if t < 0:
            raise ValueError(f"novelty threshold must be >= 0, got {t}")
        for name, v in (("stagnation", stagnation), ("window", window), ("admit_limit", admit_limit)):
            if not check_int(v, 0 if name == "admit_limit" else 1):
                raise ValueError(f"novelty {name} must be a positive integer, got {v!r}")
        if not 0 < float(lower_factor) <= 1:
            raise ValueError(f"novelty lower_factor must be in (0, 1], got {lower_factor}")
        if not float(raise_factor) >= 1:
            raise ValueError(f"novelty raise_factor must be >= 1, got {raise_factor}")
        self._params = NoveltyParams(threshold=t, stagnation=int(stagnation), lower_factor=float(lower_factor),
                                     window=int(window), admit_limit=int(admit_limit),
                                     raise_factor=float(raise_factor))
        self.threshold = t
        self._stagnant = 0
        self._window_evals = 0
        self._window_adds = 0

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        p = self._params
        admitted = self.size == 0 or novelty >= self.threshold
        if admitted:
            result = self._admit(agent_id, fitness, x, novelty)
            self._stagnant = 0
            self._window_adds += 1
        else:
            result = AddResult("not_added", novelty, None, None)
            self._stagnant += 1
        self._window_evals += 1
        if self._stagnant >= p.stagnation:
            self.threshold *= p.lower_factor
            self._stagnant = 0
        if self._window_adds > p.admit_limit:
            self.threshold *= p.raise_factor
            self._window_evals = self._window_adds = 0
        elif self._window_evals >= p.window:
            self._window_evals = self._window_adds = 0
        return result

    def _kind_schema(self) -> dict[str, Any]:
        return {**super()._kind_schema(), **asdict(self._params)}

    def _kind_state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "stagnant": self._stagnant,
                "window_evals": self._window_evals, "window_adds": self._window_adds}

    def _set_kind_state(self, state: Mapping[str, Any]) -> None:
        self.threshold = float(state.get("threshold", self._params.threshold))
        self._stagnant = int(state.get("stagnant", 0))
        self._window_evals = int(state.get("window_evals", 0))
        self._window_adds = int(state.get("window_adds", 0))

    @classmethod
    def _from_schema(cls, schema: Mapping[str, Any]) -> NoveltyArchive:
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   threshold=schema["threshold"], stagnation=schema["stagnation"], lower_factor=schema["lower_factor"],
                   window=schema["window"], admit_limit=schema["admit_limit"], raise_factor=schema["raise_factor"],
                   _edges=schema["edges"])


class AllArchive(OwnCellArchive):
    """Darwin Gödel Machine archive: every valid child is admitted as its own cell."""

    kind = "all"

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        return self._admit(agent_id, fitness, x, novelty)

    @classmethod
    def _from_schema(cls, schema: Mapping[str, Any]) -> AllArchive:
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   _edges=schema["edges"])
