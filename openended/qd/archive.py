"""The archive: one object that admits evaluated children, built from collaborating parts.

An :class:`Archive` holds a :class:`~openended.qd.members.MemberStore` (the members), a
:class:`~openended.qd.members.NoveltyIndex` over it (novelty of a descriptor), a cell measure (a
:class:`~openended.qd.space.MeasurementGrid` or the CVT centroids) and a
:class:`~openended.qd.stats.QDStats` on the measure's cells. A kind (``cells.py``, ``novelty.py``)
adds only its admission rule (``_place``), its cell order and its schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from openended.names import ARCHIVE_KINDS
from openended.qd.members import MemberStore, NoveltyIndex
from openended.qd.space import DescriptorSpace, SpaceLike, check_agent_id, check_fitness, check_int
from openended.qd.stats import ArchiveStats, QDStats

__all__ = ["FLOAT_NOISE", "AddResult", "Archive", "CellMeasure", "archive_class"]

#: The relative margin campaigns set (:meth:`Archive.set_margin`): a child 1e-12 x |elite| fitter than an elite
#: differs from it by floating-point rounding (summing the same numbers in another order), not by merit.
FLOAT_NOISE = 1e-12


@dataclass(frozen=True, slots=True)
class AddResult:
    """Outcome of one ``Archive.add``.

    status: ``'new_cell'`` | ``'improved'`` | ``'not_added'``; novelty: mean distance to the k nearest
    members before insertion; cell: the cell the child occupies when added, else None; replaced:
    the agent id evicted from that cell, if any.
    """

    status: str
    novelty: float
    cell: int | None
    replaced: int | None


class CellMeasure(Protocol):
    """Where statistics are measured: ``n_cells`` cells, the cell of one or many descriptors."""

    n_cells: int

    def cell(self, x: np.ndarray) -> int: ...

    def cells(self, X: np.ndarray) -> np.ndarray: ...


_KIND_CLASSES: dict[str, type[Archive]] = {}


def archive_class(kind: object) -> type[Archive]:
    """The class of archive ``kind``; ValueError naming an unknown kind and the valid ones."""
    cls = _KIND_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown archive kind {kind!r}; valid kinds: {', '.join(ARCHIVE_KINDS)}")
    return cls


class Archive:
    """Base class: member store, k-nearest-neighbour novelty, incremental statistics.

    Subclasses set ``kind`` (one of ``openended.names.ARCHIVE_KINDS``; the class is then the one
    :func:`archive_class` gives for it), call :meth:`_set_measure` and implement ``_place`` (the
    admission rule). Constructors are keyword-only. Member arrays (see :meth:`members`) are
    aligned, length ``size``, ordered by cell.
    """

    kind: ClassVar[str] = "base"
    #: Whether ``make_archive``'s ``seed`` is passed to the constructor.
    seeded: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            if cls.kind not in ARCHIVE_KINDS:
                raise TypeError(f"{cls.__name__}.kind {cls.kind!r} is not one of {ARCHIVE_KINDS}")
            _KIND_CLASSES[cls.kind] = cls

    def __init__(self, *, space: SpaceLike, fitness_offset: float, k: int = 15, **kind_params: Any):
        if kind_params:
            raise ValueError(
                f"unknown parameter(s) {sorted(kind_params)} for archive kind {self.kind!r}"
            )
        if isinstance(space, dict):
            space = DescriptorSpace.from_dict(space)
        if not isinstance(space, DescriptorSpace):
            raise ValueError(f"space must be a DescriptorSpace or dict, got {type(space).__name__}")
        self.space = space
        self.fitness_offset = check_fitness(fitness_offset)
        if not check_int(k, 1):
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.k = int(k)
        # How much fitter than an elite a child must be to replace it (grid and cvt; see ``fitter``):
        # more than ``tolerance``, and more than ``noise`` x max(1, |elite|). Both 0: strictly fitter.
        self.tolerance = 0.0
        self.noise = 0.0
        self._store = MemberStore(space.dim)
        self._index = NoveltyIndex(self._store, self.k)
        self._measure: CellMeasure
        self._stats: QDStats

    def _set_measure(self, measure: CellMeasure) -> None:
        """Measure statistics on ``measure``'s cells (subclasses call this once)."""
        self._measure = measure
        self._stats = QDStats(measure.n_cells, self.fitness_offset)

    # ------------------------------------------------------------------ what a kind implements
    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        raise NotImplementedError

    def _order(self) -> np.ndarray | None:
        """Slots in cell order, or None when slot order already is cell order."""
        return None

    def _kind_schema(self) -> dict[str, Any]:
        return {}

    def _kind_state(self) -> dict[str, Any]:
        return {}

    def _set_kind_state(self, state: Mapping[str, Any]) -> None:
        pass

    @classmethod
    def _from_schema(cls, schema: Mapping[str, Any]) -> Archive:
        raise NotImplementedError

    def _check_restored_cells(self, cells: np.ndarray) -> None:
        raise NotImplementedError

    def _mcells_for_restore(self, cells: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self._measure.cells(X)

    def _load_slots(self) -> None:
        pass

    # ------------------------------------------------------------------ changes (for kinds)
    def _append(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float, cell: int, mcell: int) -> int:
        slot = self._store.append(agent_id, fitness, x, novelty, cell, mcell)
        self._stats.admit(mcell, fitness)
        self._index.changed()
        return slot

    def _replace(self, slot: int, agent_id: int, fitness: float, x: np.ndarray, novelty: float, mcell: int) -> None:
        old_fitness = float(self._store.fitness[slot])
        self._store.replace(slot, agent_id, fitness, x, novelty, mcell)
        self._stats.replace(mcell, old_fitness, fitness)
        self._index.replaced(slot)
        self._index.changed()

    def set_margin(self, *, tolerance: float = 0.0, noise: float = 0.0) -> None:
        """Require a replacing child to be fitter than the elite by more than ``tolerance`` (absolute) and
        ``noise`` x max(1, |elite|) (relative: floating-point noise). Part of the schema when not 0."""
        for name, value in (("tolerance", tolerance), ("noise", noise)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")):
                raise ValueError(f"fitness {name} must be a finite number >= 0, got {value!r}")
        self.tolerance, self.noise = float(tolerance), float(noise)

    def fitter(self, fitness: float, elite: float) -> bool:
        """Whether a child of ``fitness`` may replace an elite of fitness ``elite``."""
        return fitness - elite > max(self.tolerance, self.noise * max(1.0, abs(elite)))

    # ------------------------------------------------------------------ public API
    def novelty(self, descriptors: npt.ArrayLike) -> np.ndarray:
        """Novelty of each descriptor, shape (n,): mean distance to the k nearest members."""
        return self._index.novelty(self.space.check_many(descriptors))

    @property
    def novelty_index(self) -> NoveltyIndex:
        """The k-nearest-neighbour index (read its ``indexed``, ``stale`` and ``tail``; do not change it)."""
        return self._index

    def measurement_cell(self, descriptor: npt.ArrayLike) -> int:
        """The measurement cell of one descriptor (for ``grid`` and ``cvt`` also its archive cell)."""
        return int(self._measure.cell(self.space.check(descriptor)))

    def add(self, agent_id: int, fitness: float, descriptor: npt.ArrayLike) -> AddResult:
        """Offer one evaluated child; returns its :class:`AddResult`."""
        agent_id = check_agent_id(agent_id)
        fitness = check_fitness(fitness)
        x = self.space.check(descriptor)
        return self._add_checked(agent_id, fitness, x)

    def _add_checked(self, agent_id: int, fitness: float, x: np.ndarray) -> AddResult:
        novelty = float(self._index.knn_mean(x[None, :])[0])
        self._stats.evaluations += 1
        return self._place(agent_id, fitness, x, novelty)

    def add_batch(self, agent_ids: Iterable[int], fitness: npt.ArrayLike,
                  descriptors: npt.ArrayLike) -> list[AddResult]:
        """Offer many children; the same results as calling :meth:`add` for each in order.

        All inputs are validated before any is added. Shapes: agent_ids (n,), fitness (n,),
        descriptors (n, d).
        """
        ids = [check_agent_id(a) for a in agent_ids]
        fit = np.asarray(fitness, dtype=np.float64).reshape(-1)
        if len(fit) != len(ids):
            raise ValueError(f"got {len(ids)} agent ids but {len(fit)} fitness values")
        if not np.isfinite(fit).all():
            i = int(np.flatnonzero(~np.isfinite(fit))[0])
            raise ValueError(f"fitness of row {i} is not finite ({fit[i]})")
        if len(ids) == 0:
            return []
        X = self.space.check_many(descriptors)
        if len(X) != len(ids):
            raise ValueError(f"got {len(ids)} agent ids but {len(X)} descriptor rows")
        return [self._add_checked(a, float(f), x) for a, f, x in zip(ids, fit.tolist(), X, strict=True)]

    @property
    def size(self) -> int:
        return self._store.size

    def __len__(self) -> int:
        return self._store.size

    def stats(self) -> ArchiveStats:
        """qd_score, coverage, max_fitness, mean_fitness (None when empty), size, cells, occupied, evaluations."""
        return self._stats.as_dict()

    def members(self) -> dict[str, np.ndarray]:
        """Aligned read-only arrays of length ``size``, ordered by cell.

        'agent_id' (n,) int64, 'fitness' (n,) float64, 'descriptors' (n, d) float64, 'novelty' (n,)
        float64 (novelty at admission), 'cell' (n,) int64. The arrays are cached until the next
        change; copy them to keep them.
        """
        return self._store.view(self._order)

    def elites(self) -> list[dict[str, Any]]:
        """Members as JSON-able dicts (the shape :meth:`restore` takes)."""
        m = self.members()
        return [
            {"cell": int(c), "agent_id": int(a), "fitness": float(f), "descriptors": [float(v) for v in x],
             "novelty": float(nv)}
            for c, a, f, x, nv in zip(m["cell"], m["agent_id"], m["fitness"], m["descriptors"], m["novelty"],
                                      strict=True)
        ]

    def schema(self) -> dict[str, Any]:
        """JSON-able description fixed at creation (kind, space, offset, k, edges or centroids...)."""
        margin = {name: value for name, value in (("tolerance", self.tolerance), ("noise", self.noise)) if value}
        return {
            "kind": self.kind,
            "space": self.space.to_dict(),
            "fitness_offset": self.fitness_offset,
            "k": self.k,
            **self._kind_schema(),
            **margin,
        }

    def state(self) -> dict[str, Any]:
        """JSON-able mutable state that is not in the elites."""
        return {"evaluations": self._stats.evaluations, **self._kind_state()}

    @classmethod
    def restore(cls, *, schema: Mapping[str, Any], state: Mapping[str, Any],
                elites: list[dict[str, Any]] | Mapping[str, npt.ArrayLike]) -> Archive:
        """Rebuild an archive from :meth:`schema`, :meth:`state` and its elites.

        ``elites``: dicts with cell, agent_id, fitness, descriptors, novelty (any order), or the same as
        aligned columns (a mapping of those names to arrays, descriptors of shape (n, d), as
        :meth:`members` and ``ArchiveDB.elite_arrays`` give them): no Python object per member, for
        archives of millions. The result equals the original in members, stats and future ``add`` behaviour.
        """
        if not isinstance(schema, dict) or "kind" not in schema:
            raise ValueError("archive schema must be a dict with a 'kind'")
        kind = schema["kind"]
        target = archive_class(kind)
        if cls is not Archive and cls is not target:
            raise ValueError(f"{cls.__name__}.restore got a schema of kind {kind!r}")
        arch = target._from_schema(schema)
        arch.set_margin(tolerance=schema.get("tolerance", 0.0), noise=schema.get("noise", 0.0))
        arch._load_elites(elites)
        arch._stats.evaluations = int(state.get("evaluations", 0))
        arch._set_kind_state(state)
        return arch

    def _load_elites(self, elites: list[dict[str, Any]] | Mapping[str, npt.ArrayLike]) -> None:
        try:
            columns = _elite_columns(elites) if isinstance(elites, Mapping) else _elite_dicts(elites)
        except KeyError as exc:
            raise ValueError(f"elite is missing {exc.args[0]!r}") from None
        cells, ids, fit, nov, descriptors = columns
        n = len(cells)
        if n == 0:
            return
        X = self.space.check_many(descriptors)
        if len(X) != n:
            raise ValueError(f"{len(X)} descriptors for {n} elites")
        order = np.argsort(cells, kind="stable")
        cells, ids, fit, nov, X = cells[order], ids[order], fit[order], nov[order], X[order]
        if n > 1 and bool((cells[1:] == cells[:-1]).any()):  # sorted: a repeat is next to its twin
            raise ValueError("elites occupy the same cell more than once")
        self._check_restored_cells(cells)
        mcells = self._mcells_for_restore(cells, X)
        self._store.load(ids, fit, nov, cells, X, mcells)
        self._load_slots()
        self._stats.load(mcells, fit)
        self._index.rebuild()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind!r} size={self.size} d={self.space.dim}>"


_Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]


def _elite_dicts(elites: list[dict[str, Any]]) -> _Columns:
    """Elites given as dicts, as columns (each value checked as it is read)."""
    cells = np.array([int(e["cell"]) for e in elites], dtype=np.int64)
    ids = np.array([check_agent_id(e["agent_id"]) for e in elites], dtype=np.int64)
    fit = np.array([check_fitness(e["fitness"]) for e in elites], dtype=np.float64)
    nov = np.array([float(e["novelty"]) for e in elites], dtype=np.float64)
    return cells, ids, fit, nov, [e["descriptors"] for e in elites]


def _elite_columns(elites: Mapping[str, npt.ArrayLike]) -> _Columns:
    """Elites given as aligned columns, checked as the dicts are: integer cells and agent ids >= 0,
    finite fitness, numeric novelty, one row of descriptors per elite (checked by the space)."""
    columns = []
    for name in ("cell", "agent_id"):
        column = np.asarray(elites[name])
        if column.size and column.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integers, got an array of {column.dtype}")
        columns.append(column.astype(np.int64, copy=False).reshape(-1))
    cells, ids = columns
    if ids.size and ids.min() < 0:
        raise ValueError(f"agent_id must be >= 0, got {int(ids.min())}")
    try:
        fit = np.asarray(elites["fitness"], dtype=np.float64).reshape(-1)
        nov = np.asarray(elites["novelty"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fitness and novelty must be numbers: {exc}") from None
    if not np.isfinite(fit).all():
        raise ValueError(f"fitness is not finite ({fit[~np.isfinite(fit)][0]})")
    if not len(cells) == len(ids) == len(fit) == len(nov):
        raise ValueError(f"elite columns of different lengths: cell {len(cells)}, agent_id {len(ids)}, "
                         f"fitness {len(fit)}, novelty {len(nov)}")
    descriptors = np.asarray(elites["descriptors"], dtype=np.float64)
    if descriptors.ndim == 1 and len(cells) == 0:
        descriptors = descriptors.reshape(0, -1)
    return cells, ids, fit, nov, descriptors

