"""Quality-diversity archives: MAP-Elites grid, CVT, novelty search and the keep-everything archive.

Four kinds share one store (:class:`Archive`):

``grid``
    MAP-Elites. The descriptor space is cut into ``bins[i]`` equal bins per dimension (edges from
    ``np.linspace``, saved in the schema). Descriptors outside the bounds are clipped into the edge
    cells. A child enters an empty cell (``new_cell``) or replaces the elite when its fitness is
    strictly greater (``improved``); otherwise ``not_added``.
``cvt``
    CVT-MAP-Elites. ``cells`` centroids (default 1024) from k-means (Lloyd iterations, nearest
    centroid by ``scipy.spatial.cKDTree``) over a seeded uniform sample of the bounds; centroids are
    saved in the schema. Same replacement rule as ``grid``.
``novelty``
    Novelty search (Lehman & Stanley 2011). Every member is its own cell (cell = member index
    0, 1, 2, ...). A child is admitted when its novelty is >= the current threshold (the first
    child always is). See :class:`NoveltyArchive` for the adaptive-threshold rule.
``all``
    Darwin Gödel Machine: every valid child is admitted as its own cell.

Novelty of a descriptor is the mean Euclidean distance (in descriptor units) to its ``k`` nearest
archive members (fewer when the archive is smaller); an empty archive gives ``norm(upper - lower)``.
Members live in preallocated arrays grown by doubling; a ``cKDTree`` indexes a prefix of them and
the un-indexed tail (plus elites replaced since the last rebuild) is brute-forced with numpy; the tree
is rebuilt when that tail grows past ``max(256, size // 32)``. The k distances are recomputed exactly
and summed smallest first, so the value does not depend on where the tree was last rebuilt: a
restored archive gives bit-identical novelty.

Statistics are measured on the space's measurement grid (its bins) for ``grid``, ``novelty`` and
``all``, and on the centroids for ``cvt``: coverage = occupied cells / cells; QD score = sum over
occupied cells of (best fitness in the cell - fitness_offset). Both are kept incrementally with exact
integer accumulators, so ``stats()`` is O(1) and independent of insertion order.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "ARCHIVE_KINDS",
    "AddResult",
    "AllArchive",
    "Archive",
    "CVTArchive",
    "DescriptorSpace",
    "GridArchive",
    "NoveltyArchive",
    "make_archive",
    "restore_archive",
]

ARCHIVE_KINDS = ("grid", "cvt", "novelty", "all")

#: Largest measurement grid (product of bins) an archive will allocate.
MAX_GRID_CELLS = 10_000_000

_EXACT_SHIFT = 1074  # every finite double is an integer multiple of 2**-1074


def _exact(x: float) -> int:
    """``x`` as an exact integer in units of 2**-1074 (for order-independent sums)."""
    num, den = float(x).as_integer_ratio()
    return num << (_EXACT_SHIFT - (den.bit_length() - 1))


def _from_exact(total: int, divisor: int = 1) -> float:
    """Correctly rounded ``total * 2**-1074 / divisor``."""
    return total / (divisor << _EXACT_SHIFT)


# --------------------------------------------------------------------------- descriptor space
@dataclass(frozen=True, eq=False)
class DescriptorSpace:
    """Names, bounds and measurement bins of the behaviour descriptors.

    ``lower`` and ``upper`` are float arrays of shape (d,); ``bins`` a tuple of d ints >= 1.
    Construction validates everything and raises ValueError naming the offending descriptor.
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    bins: tuple[int, ...]

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names:
            raise ValueError("descriptor space has no descriptors")
        for nm in names:
            if not isinstance(nm, str) or not nm:
                raise ValueError(f"descriptor name {nm!r} must be a non-empty string")
        if len(set(names)) != len(names):
            raise ValueError(f"descriptor names must be unique, got {list(names)}")
        d = len(names)
        try:
            lower = np.array(self.lower, dtype=np.float64).reshape(-1)
            upper = np.array(self.upper, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"descriptor bounds must be numbers: {exc}") from None
        bins_in = list(self.bins)
        for what, n in (("lower", lower.size), ("upper", upper.size), ("bins", len(bins_in))):
            if n != d:
                raise ValueError(f"descriptor space has {d} names {list(names)} but {n} {what} values")
        bins = []
        for i, nm in enumerate(names):
            lo, hi, b = lower[i], upper[i], bins_in[i]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"descriptor {nm!r}: bounds must be finite, got [{lo}, {hi}]")
            if not lo < hi:
                raise ValueError(f"descriptor {nm!r}: lower ({lo}) must be < upper ({hi})")
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
                raise ValueError(f"descriptor {nm!r}: bins must be an integer >= 1, got {b!r}")
            bins.append(int(b))
        lower.setflags(write=False)
        upper.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "bins", tuple(bins))

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def n_cells(self) -> int:
        """Cells of the measurement grid (product of bins)."""
        return math.prod(self.bins)

    @property
    def diameter(self) -> float:
        """Largest distance inside the bounds, ``norm(upper - lower)``."""
        return float(np.linalg.norm(self.upper - self.lower))

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorSpace":
        """From ``{"names": [...], "lower": [...], "upper": [...], "bins": [...]}``."""
        if not isinstance(d, dict):
            raise ValueError(f"descriptor space must be a dict, got {type(d).__name__}")
        missing = [key for key in ("names", "lower", "upper", "bins") if key not in d]
        if missing:
            raise ValueError(f"descriptor space is missing {missing}")
        extra = sorted(set(d) - {"names", "lower", "upper", "bins"})
        if extra:
            raise ValueError(f"descriptor space has unknown keys {extra}")
        return cls(names=tuple(d["names"]), lower=d["lower"], upper=d["upper"], bins=tuple(d["bins"]))

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "lower": [float(x) for x in self.lower],
            "upper": [float(x) for x in self.upper],
            "bins": list(self.bins),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DescriptorSpace):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.names, tuple(self.lower.tolist()), tuple(self.upper.tolist()), self.bins))

    def check(self, descriptor: Any) -> np.ndarray:
        """One descriptor as a float array of shape (d,); ValueError naming the problem."""
        try:
            x = np.asarray(descriptor, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"descriptors must be numbers: {exc}") from None
        if x.ndim != 1 or x.shape[0] != self.dim:
            raise ValueError(
                f"expected {self.dim} descriptors {list(self.names)}, got shape {tuple(x.shape)}"
            )
        if not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(f"descriptor {self.names[i]!r} is not finite ({x[i]})")
        return x

    def check_many(self, descriptors: Any) -> np.ndarray:
        """Many descriptors as a float array of shape (n, d); ValueError naming the problem."""
        try:
            x = np.asarray(descriptors, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"descriptors must be numbers: {exc}") from None
        if x.ndim == 1 and x.shape[0] == self.dim:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"expected descriptors of shape (n, {self.dim}) for {list(self.names)}, got {tuple(x.shape)}"
            )
        bad = ~np.isfinite(x)
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(f"descriptor {self.names[c]!r} of row {r} is not finite ({x[r, c]})")
        return x


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


def _check_fitness(fitness: Any) -> float:
    try:
        f = float(fitness)
    except (TypeError, ValueError):
        raise ValueError(f"fitness must be a number, got {fitness!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"fitness is not finite ({f})")
    return f


def _check_agent_id(agent_id: Any) -> int:
    if isinstance(agent_id, bool) or not isinstance(agent_id, (int, np.integer)):
        raise ValueError(f"agent_id must be an integer, got {agent_id!r}")
    if agent_id < 0:
        raise ValueError(f"agent_id must be >= 0, got {agent_id}")
    return int(agent_id)


class _Grid:
    """The measurement grid: bin edges per dimension, cell = C-order ravel of bin indices."""

    def __init__(self, edges: list[list[float]]):
        self.edges = [np.asarray(e, dtype=np.float64) for e in edges]
        self.inner = [e[1:-1].tolist() for e in self.edges]
        self.inner_np = [e[1:-1] for e in self.edges]
        self.shape = tuple(len(e) - 1 for e in self.edges)
        self.n_cells = math.prod(self.shape)
        strides = []
        s = 1
        for b in reversed(self.shape):
            strides.append(s)
            s *= b
        self.strides = tuple(reversed(strides))

    @classmethod
    def from_space(cls, space: DescriptorSpace) -> "_Grid":
        if space.n_cells > MAX_GRID_CELLS:
            raise ValueError(
                f"measurement grid of {space.n_cells} cells (bins {list(space.bins)}) exceeds {MAX_GRID_CELLS}"
            )
        return cls([np.linspace(lo, hi, b + 1).tolist() for lo, hi, b in zip(space.lower, space.upper, space.bins)])

    def cell(self, x: np.ndarray) -> int:
        c = 0
        for inner, stride, v in zip(self.inner, self.strides, x.tolist()):
            c += bisect.bisect_right(inner, v) * stride
        return c

    def cells(self, X: np.ndarray) -> np.ndarray:
        c = np.zeros(len(X), dtype=np.int64)
        for j, (inner, stride) in enumerate(zip(self.inner_np, self.strides)):
            c += np.searchsorted(inner, X[:, j], side="right").astype(np.int64) * stride
        return c


# --------------------------------------------------------------------------- the archive store
class Archive:
    """Base class: member store, k-nearest-neighbour novelty, incremental statistics.

    Subclasses set ``kind`` and implement ``_place`` (the admission rule). Constructors are
    keyword-only. Member arrays (see :meth:`members`) are aligned, length ``size``, ordered by cell.
    """

    kind: ClassVar[str] = "base"
    _REBUILD_MIN = 256

    def __init__(self, *, space: DescriptorSpace | dict, fitness_offset: float, k: int = 15, **kind_params: Any):
        if kind_params:
            raise ValueError(
                f"unknown parameter(s) {sorted(kind_params)} for archive kind {self.kind!r}"
            )
        if isinstance(space, dict):
            space = DescriptorSpace.from_dict(space)
        if not isinstance(space, DescriptorSpace):
            raise ValueError(f"space must be a DescriptorSpace or dict, got {type(space).__name__}")
        self.space = space
        self.fitness_offset = _check_fitness(fitness_offset)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.k = int(k)
        self._d = space.dim
        self._empty_novelty = space.diameter
        # member buffers (grown by doubling)
        cap = 64
        self._size = 0
        self._ids = np.zeros(cap, dtype=np.int64)
        self._fit = np.zeros(cap, dtype=np.float64)
        self._desc = np.zeros((cap, self._d), dtype=np.float64)
        self._nov = np.zeros(cap, dtype=np.float64)
        self._cell = np.zeros(cap, dtype=np.int64)
        self._mcell = np.zeros(cap, dtype=np.int64)
        self._stale = np.zeros(cap, dtype=bool)  # slot changed since the tree was built
        # kNN index: tree over slots [0, _indexed); stale slots listed in _dirty
        self._tree: cKDTree | None = None
        self._indexed = 0
        self._dirty: list[int] = []
        # statistics on measurement cells
        self._evaluations = 0
        self._version = 0
        self._members_cache: tuple[int, dict[str, np.ndarray]] | None = None
        self._max_fit: float | None = None
        self._fit_sum = 0  # exact
        self._best_sum = 0  # exact, sum of best fitness over occupied measurement cells
        self._occupied = 0

    def _init_measure(self, n_cells: int) -> None:
        self._n_mcells = n_cells
        self._mbest = np.full(n_cells, -np.inf)

    # ------------------------------------------------------------------ abstract
    def _mcell_of(self, x: np.ndarray) -> int:
        raise NotImplementedError

    def _mcells_of(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        raise NotImplementedError

    def _kind_schema(self) -> dict:
        return {}

    def _kind_state(self) -> dict:
        return {}

    def _set_kind_state(self, state: dict) -> None:
        pass

    @classmethod
    def _from_schema(cls, schema: dict) -> "Archive":
        raise NotImplementedError

    # ------------------------------------------------------------------ storage
    def _grow(self) -> None:
        cap = 2 * len(self._ids)
        for name in ("_ids", "_fit", "_nov", "_cell", "_mcell", "_stale"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: self._size] = old[: self._size]
            setattr(self, name, new)
        desc = np.zeros((cap, self._d), dtype=np.float64)
        desc[: self._size] = self._desc[: self._size]
        self._desc = desc

    def _append(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float, cell: int, mcell: int) -> int:
        if self._size == len(self._ids):
            self._grow()
        s = self._size
        self._ids[s] = agent_id
        self._fit[s] = fitness
        self._desc[s] = x
        self._nov[s] = novelty
        self._cell[s] = cell
        self._mcell[s] = mcell
        self._stale[s] = False
        self._size = s + 1
        self._fit_sum += _exact(fitness)
        if self._max_fit is None or fitness > self._max_fit:
            self._max_fit = fitness
        self._measure(mcell, fitness)
        self._after_change()
        return s

    def _replace(self, slot: int, agent_id: int, fitness: float, x: np.ndarray, novelty: float, mcell: int) -> None:
        self._fit_sum += _exact(fitness) - _exact(float(self._fit[slot]))
        self._ids[slot] = agent_id
        self._fit[slot] = fitness
        self._desc[slot] = x
        self._nov[slot] = novelty
        self._mcell[slot] = mcell
        if self._max_fit is None or fitness > self._max_fit:
            self._max_fit = fitness
        if slot < self._indexed and not self._stale[slot]:
            self._stale[slot] = True
            self._dirty.append(slot)
        self._measure(mcell, fitness)
        self._after_change()

    def _measure(self, mcell: int, fitness: float) -> None:
        best = self._mbest[mcell]
        if best == -np.inf:
            self._occupied += 1
            self._best_sum += _exact(fitness)
            self._mbest[mcell] = fitness
        elif fitness > best:
            self._best_sum += _exact(fitness) - _exact(float(best))
            self._mbest[mcell] = fitness

    def _after_change(self) -> None:
        self._version += 1
        tail = self._size - self._indexed + len(self._dirty)
        if tail > max(self._REBUILD_MIN, self._size // 32):
            self._rebuild()

    def _rebuild(self) -> None:
        n = self._size
        self._tree = cKDTree(self._desc[:n].copy(), balanced_tree=False, compact_nodes=False) if n else None
        self._indexed = n
        for s in self._dirty:
            self._stale[s] = False
        self._dirty = []

    # ------------------------------------------------------------------ novelty
    def _knn_mean(self, X: np.ndarray) -> np.ndarray:
        """Mean distance of each row of X (n, d) to its k nearest members; exact and order-free."""
        n = len(X)
        size = self._size
        if size == 0:
            return np.full(n, self._empty_novelty)
        k = min(self.k, size)
        desc = self._desc
        parts: list[np.ndarray] = []

        def sqdist(M: np.ndarray, Xb: np.ndarray) -> np.ndarray:
            # M: (n, m, d) or (m, d); columnwise so each entry is computed identically everywhere
            out = None
            for j in range(self._d):
                xj = Xb[:, j][:, None]
                diff = (M[..., j] if M.ndim == 3 else M[None, :, j]) - xj
                out = diff * diff if out is None else out + diff * diff
            return out

        if self._tree is not None and self._indexed > 0:
            kq = min(self._indexed, k + len(self._dirty) + 2)
            _, idx = self._tree.query(X, k=list(range(1, kq + 1)))
            D = sqdist(desc[idx], X)
            if self._dirty:
                D[self._stale[idx]] = np.inf
            parts.append(D)
        if self._indexed < size:
            parts.append(sqdist(desc[self._indexed:size], X))
        if self._dirty:
            parts.append(sqdist(desc[np.asarray(self._dirty, dtype=np.int64)], X))
        D = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if D.shape[1] > k:
            D = np.partition(D, k - 1, axis=1)[:, :k]
        D = np.sqrt(np.sort(D, axis=1))
        total = D[:, 0].copy()
        for j in range(1, k):
            total += D[:, j]
        return total / k

    def novelty(self, descriptors: Any) -> np.ndarray:
        """Novelty of each descriptor, shape (n,): mean distance to the k nearest members."""
        X = self.space.check_many(descriptors)
        out = np.empty(len(X))
        step = max(1, 4_000_000 // max(1, self._d * (self._size - self._indexed + len(self._dirty) + self.k + 2)))
        for i in range(0, len(X), step):
            out[i : i + step] = self._knn_mean(X[i : i + step])
        return out

    # ------------------------------------------------------------------ public API
    def add(self, agent_id: int, fitness: float, descriptor: Any) -> AddResult:
        """Offer one evaluated child; returns its :class:`AddResult`."""
        agent_id = _check_agent_id(agent_id)
        fitness = _check_fitness(fitness)
        x = self.space.check(descriptor)
        return self._add_checked(agent_id, fitness, x)

    def _add_checked(self, agent_id: int, fitness: float, x: np.ndarray) -> AddResult:
        novelty = float(self._knn_mean(x[None, :])[0])
        self._evaluations += 1
        return self._place(agent_id, fitness, x, novelty)

    def add_batch(self, agent_ids: Iterable[int], fitness: Any, descriptors: Any) -> list[AddResult]:
        """Offer many children; the same results as calling :meth:`add` for each in order.

        All inputs are validated before any is added. Shapes: agent_ids (n,), fitness (n,),
        descriptors (n, d).
        """
        ids = [_check_agent_id(a) for a in agent_ids]
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
        return [self._add_checked(a, float(f), x) for a, f, x in zip(ids, fit.tolist(), X)]

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def version(self) -> int:
        """Counter bumped by every change to the members (for caches)."""
        return self._version

    def stats(self) -> dict:
        """qd_score, coverage, max_fitness, mean_fitness (None when empty), size, cells, occupied, evaluations."""
        n = self._size
        return {
            "qd_score": _from_exact(self._best_sum - self._occupied * _exact(self.fitness_offset)),
            "coverage": self._occupied / self._n_mcells,
            "max_fitness": self._max_fit,
            "mean_fitness": _from_exact(self._fit_sum, n) if n else None,
            "size": n,
            "cells": self._n_mcells,
            "occupied": self._occupied,
            "evaluations": self._evaluations,
        }

    def _order(self) -> np.ndarray | None:
        """Slots in cell order, or None when slot order already is cell order."""
        return None

    def members(self) -> dict[str, np.ndarray]:
        """Aligned read-only arrays of length ``size``, ordered by cell.

        'agent_id' (n,) int64, 'fitness' (n,) float64, 'descriptors' (n, d) float64, 'novelty' (n,)
        float64 (novelty at admission), 'cell' (n,) int64. The arrays are cached until the next
        change; copy them to keep them.
        """
        cached = self._members_cache
        if cached is not None and cached[0] == self._version:
            return cached[1]
        n = self._size
        order = self._order()
        out = {}
        for key, arr in (("agent_id", self._ids), ("fitness", self._fit), ("descriptors", self._desc),
                         ("novelty", self._nov), ("cell", self._cell)):
            v = arr[:n] if order is None else arr[order]
            v = v.view()
            v.flags.writeable = False
            out[key] = v
        self._members_cache = (self._version, out)
        return out

    def elites(self) -> list[dict]:
        """Members as JSON-able dicts (the shape :meth:`restore` takes)."""
        m = self.members()
        return [
            {"cell": int(c), "agent_id": int(a), "fitness": float(f), "descriptors": [float(v) for v in x],
             "novelty": float(nv)}
            for c, a, f, x, nv in zip(m["cell"], m["agent_id"], m["fitness"], m["descriptors"], m["novelty"])
        ]

    def schema(self) -> dict:
        """JSON-able description fixed at creation (kind, space, offset, k, edges or centroids...)."""
        return {
            "kind": self.kind,
            "space": self.space.to_dict(),
            "fitness_offset": self.fitness_offset,
            "k": self.k,
            **self._kind_schema(),
        }

    def state(self) -> dict:
        """JSON-able mutable state that is not in the elites."""
        return {"evaluations": self._evaluations, **self._kind_state()}

    @classmethod
    def restore(cls, *, schema: dict, state: dict, elites: list[dict]) -> "Archive":
        """Rebuild an archive from :meth:`schema`, :meth:`state` and its elites.

        ``elites``: dicts with cell, agent_id, fitness, descriptors, novelty (any order). The result
        equals the original in members, stats and future ``add`` behaviour.
        """
        if not isinstance(schema, dict) or "kind" not in schema:
            raise ValueError("archive schema must be a dict with a 'kind'")
        kind = schema["kind"]
        target = _KIND_CLASSES.get(kind)
        if target is None:
            raise ValueError(f"unknown archive kind {kind!r}; valid kinds: {', '.join(ARCHIVE_KINDS)}")
        if cls is not Archive and cls is not target:
            raise ValueError(f"{cls.__name__}.restore got a schema of kind {kind!r}")
        arch = target._from_schema(schema)
        arch._load_elites(elites)
        arch._evaluations = int(state.get("evaluations", 0))
        arch._set_kind_state(state)
        return arch

    def _load_elites(self, elites: list[dict]) -> None:
        n = len(elites)
        if n == 0:
            return
        try:
            cells = np.array([int(e["cell"]) for e in elites], dtype=np.int64)
            ids = [_check_agent_id(e["agent_id"]) for e in elites]
            fit = np.array([_check_fitness(e["fitness"]) for e in elites], dtype=np.float64)
            nov = np.array([float(e["novelty"]) for e in elites], dtype=np.float64)
            X = self.space.check_many([e["descriptors"] for e in elites])
        except KeyError as exc:
            raise ValueError(f"elite is missing {exc.args[0]!r}") from None
        order = np.argsort(cells, kind="stable")
        cells, fit, nov, X = cells[order], fit[order], nov[order], X[order]
        ids = np.asarray(ids, dtype=np.int64)[order]
        if len(np.unique(cells)) != n:
            raise ValueError("elites occupy the same cell more than once")
        self._check_restored_cells(cells)
        cap = max(64, 1 << (n - 1).bit_length())
        self._ids = np.zeros(cap, dtype=np.int64)
        self._fit = np.zeros(cap)
        self._nov = np.zeros(cap)
        self._cell = np.zeros(cap, dtype=np.int64)
        self._mcell = np.zeros(cap, dtype=np.int64)
        self._stale = np.zeros(cap, dtype=bool)
        self._desc = np.zeros((cap, self._d))
        self._ids[:n], self._fit[:n], self._nov[:n], self._cell[:n], self._desc[:n] = ids, fit, nov, cells, X
        mcells = self._mcells_for_restore(cells, X)
        self._mcell[:n] = mcells
        self._size = n
        self._load_slots()
        self._fit_sum = sum(map(_exact, fit.tolist()))
        self._max_fit = float(fit.max())
        best = np.full(self._n_mcells, -np.inf)
        np.maximum.at(best, mcells, fit)
        self._mbest = best
        occ = best[np.isfinite(best)]
        self._occupied = len(occ)
        self._best_sum = sum(map(_exact, occ.tolist()))
        self._version += 1
        self._rebuild()

    def _check_restored_cells(self, cells: np.ndarray) -> None:
        raise NotImplementedError

    def _mcells_for_restore(self, cells: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self._mcells_of(X)

    def _load_slots(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind!r} size={self._size} d={self._d}>"


class _CellArchive(Archive):
    """Shared by grid and cvt: one elite per cell, replaced only by strictly better fitness."""

    def _init_cells(self, n_cells: int) -> None:
        self._init_measure(n_cells)
        self._slot_of_cell = np.full(n_cells, -1, dtype=np.int64)
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._n_new = 0

    def _cell_of(self, x: np.ndarray) -> int:
        return self._mcell_of(x)

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        cell = self._cell_of(x)
        slot = int(self._slot_of_cell[cell])
        if slot < 0:
            slot = self._append(agent_id, fitness, x, novelty, cell, cell)
            self._slot_of_cell[cell] = slot
            self._n_new += 1
            return AddResult("new_cell", novelty, cell, None)
        if fitness > self._fit[slot]:
            old = int(self._ids[slot])
            self._replace(slot, agent_id, fitness, x, novelty, cell)
            return AddResult("improved", novelty, cell, old)
        return AddResult("not_added", novelty, None, None)

    def _order(self) -> np.ndarray:
        cached = self._order_cache
        if cached is not None and cached[0] == self._n_new:
            return cached[1]
        occupied = np.flatnonzero(self._slot_of_cell >= 0)
        order = self._slot_of_cell[occupied]
        self._order_cache = (self._n_new, order)
        return order

    def _check_restored_cells(self, cells: np.ndarray) -> None:
        if cells[0] < 0 or cells[-1] >= self._n_mcells:
            raise ValueError(f"elite cell out of range [0, {self._n_mcells})")

    def _mcells_for_restore(self, cells: np.ndarray, X: np.ndarray) -> np.ndarray:
        return cells

    def _load_slots(self) -> None:
        self._slot_of_cell[:] = -1
        self._slot_of_cell[self._cell[: self._size]] = np.arange(self._size)
        self._n_new += 1


class GridArchive(_CellArchive):
    """MAP-Elites grid archive (see module docstring). Cells: C-order ravel of per-dimension bins."""

    kind = "grid"

    def __init__(self, *, space: DescriptorSpace | dict, fitness_offset: float, k: int = 15,
                 _edges: list[list[float]] | None = None, **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, **kind_params)
        self._grid = _Grid(_edges) if _edges is not None else _Grid.from_space(self.space)
        self._init_cells(self._grid.n_cells)

    def _mcell_of(self, x: np.ndarray) -> int:
        return self._grid.cell(x)

    def _mcells_of(self, X: np.ndarray) -> np.ndarray:
        return self._grid.cells(X)

    def _kind_schema(self) -> dict:
        return {"edges": [e.tolist() for e in self._grid.edges]}

    @classmethod
    def _from_schema(cls, schema: dict) -> "GridArchive":
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   _edges=schema["edges"])


def _cvt_centroids(space: DescriptorSpace, cells: int, samples: int, iterations: int, seed: int) -> np.ndarray:
    """k-means (Lloyd) centroids of a seeded uniform sample of the bounds; assignment by cKDTree.

    scipy.cluster.vq.kmeans2 assigns by brute force (O(samples * cells) per iteration); the cKDTree
    assignment is O(samples log cells), which matters at the default 1024 cells.
    """
    rng = np.random.default_rng(seed)
    d = space.dim
    X = rng.uniform(space.lower, space.upper, size=(samples, d))
    C = X[rng.choice(samples, size=cells, replace=False)].copy()
    for _ in range(iterations):
        _, lab = cKDTree(C).query(X)
        counts = np.bincount(lab, minlength=cells)
        nonempty = counts > 0
        for j in range(d):
            s = np.bincount(lab, weights=X[:, j], minlength=cells)
            C[nonempty, j] = s[nonempty] / counts[nonempty]
    return C


class CVTArchive(_CellArchive):
    """CVT-MAP-Elites archive.

    Params: ``cells`` (default 1024) centroids; ``samples`` uniform points for k-means (default
    ``min(50 * cells, 100_000)``, at least ``cells``); ``iterations`` Lloyd iterations (default 10);
    ``seed`` for the sample. Centroids are stored in the schema. Statistics use the centroid cells.
    """

    kind = "cvt"

    def __init__(self, *, space: DescriptorSpace | dict, fitness_offset: float, k: int = 15, cells: int = 1024,
                 samples: int | None = None, iterations: int = 10, seed: int = 0,
                 _centroids: list[list[float]] | None = None, **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, **kind_params)
        for name, v, lo in (("cells", cells, 1), ("iterations", iterations, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"cvt {name} must be an integer >= {lo}, got {v!r}")
        cells = int(cells)
        if samples is None:
            samples = max(cells, min(50 * cells, 100_000))
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < cells:
            raise ValueError(f"cvt samples must be an integer >= cells ({cells}), got {samples!r}")
        self._params = {"cells": cells, "samples": int(samples), "iterations": int(iterations), "seed": int(seed)}
        if _centroids is not None:
            C = np.asarray(_centroids, dtype=np.float64)
            if C.shape != (cells, self._d) or not np.isfinite(C).all():
                raise ValueError(f"cvt centroids must be finite with shape ({cells}, {self._d}), got {C.shape}")
        else:
            C = _cvt_centroids(self.space, cells, int(samples), int(iterations), int(seed))
        self.centroids = C
        self.centroids.flags.writeable = False
        self._ctree = cKDTree(C)
        self._init_cells(cells)

    def _mcell_of(self, x: np.ndarray) -> int:
        return int(self._ctree.query(x)[1])

    def _mcells_of(self, X: np.ndarray) -> np.ndarray:
        return self._ctree.query(X)[1].astype(np.int64)

    def _kind_schema(self) -> dict:
        return {**self._params, "centroids": self.centroids.tolist()}

    @classmethod
    def _from_schema(cls, schema: dict) -> "CVTArchive":
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   cells=schema["cells"], samples=schema["samples"], iterations=schema["iterations"],
                   seed=schema["seed"], _centroids=schema["centroids"])


class _OwnCellArchive(Archive):
    """Shared by novelty and all: each member its own cell (cell = member index); grid stats."""

    def __init__(self, *, space: DescriptorSpace | dict, fitness_offset: float, k: int = 15,
                 _edges: list[list[float]] | None = None, **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, **kind_params)
        self._grid = _Grid(_edges) if _edges is not None else _Grid.from_space(self.space)
        self._init_measure(self._grid.n_cells)

    def _mcell_of(self, x: np.ndarray) -> int:
        return self._grid.cell(x)

    def _mcells_of(self, X: np.ndarray) -> np.ndarray:
        return self._grid.cells(X)

    def _admit(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        cell = self._size
        self._append(agent_id, fitness, x, novelty, cell, self._grid.cell(x))
        return AddResult("new_cell", novelty, cell, None)

    def _check_restored_cells(self, cells: np.ndarray) -> None:
        if not np.array_equal(cells, np.arange(len(cells))):
            raise ValueError(f"{self.kind} archive elites must occupy cells 0..{len(cells) - 1}")

    def _kind_schema(self) -> dict:
        return {"edges": [e.tolist() for e in self._grid.edges]}


class NoveltyArchive(_OwnCellArchive):
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

    def __init__(self, *, space: DescriptorSpace | dict, fitness_offset: float, k: int = 15,
                 threshold: float = 6.0, stagnation: int = 500, lower_factor: float = 0.95, window: int = 100,
                 admit_limit: int = 4, raise_factor: float = 1.2, _edges: list[list[float]] | None = None,
                 **kind_params: Any):
        super().__init__(space=space, fitness_offset=fitness_offset, k=k, _edges=_edges, **kind_params)
        t = _check_fitness(threshold)
        if t < 0:
            raise ValueError(f"novelty threshold must be >= 0, got {t}")
        for name, v in (("stagnation", stagnation), ("window", window), ("admit_limit", admit_limit)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "admit_limit" else 1):
                raise ValueError(f"novelty {name} must be a positive integer, got {v!r}")
        if not 0 < float(lower_factor) <= 1:
            raise ValueError(f"novelty lower_factor must be in (0, 1], got {lower_factor}")
        if not float(raise_factor) >= 1:
            raise ValueError(f"novelty raise_factor must be >= 1, got {raise_factor}")
        self._params = {"threshold": t, "stagnation": int(stagnation), "lower_factor": float(lower_factor),
                        "window": int(window), "admit_limit": int(admit_limit), "raise_factor": float(raise_factor)}
        self.threshold = t
        self._stagnant = 0
        self._window_evals = 0
        self._window_adds = 0

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        p = self._params
        admitted = self._size == 0 or novelty >= self.threshold
        if admitted:
            result = self._admit(agent_id, fitness, x, novelty)
            self._stagnant = 0
            self._window_adds += 1
        else:
            result = AddResult("not_added", novelty, None, None)
            self._stagnant += 1
        self._window_evals += 1
        if self._stagnant >= p["stagnation"]:
            self.threshold *= p["lower_factor"]
            self._stagnant = 0
        if self._window_adds > p["admit_limit"]:
            self.threshold *= p["raise_factor"]
            self._window_evals = self._window_adds = 0
        elif self._window_evals >= p["window"]:
            self._window_evals = self._window_adds = 0
        return result

    def _kind_schema(self) -> dict:
        return {**super()._kind_schema(), **self._params}

    def _kind_state(self) -> dict:
        return {"threshold": self.threshold, "stagnant": self._stagnant,
                "window_evals": self._window_evals, "window_adds": self._window_adds}

    def _set_kind_state(self, state: dict) -> None:
        self.threshold = float(state.get("threshold", self._params["threshold"]))
        self._stagnant = int(state.get("stagnant", 0))
        self._window_evals = int(state.get("window_evals", 0))
        self._window_adds = int(state.get("window_adds", 0))

    @classmethod
    def _from_schema(cls, schema: dict) -> "NoveltyArchive":
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   threshold=schema["threshold"], stagnation=schema["stagnation"], lower_factor=schema["lower_factor"],
                   window=schema["window"], admit_limit=schema["admit_limit"], raise_factor=schema["raise_factor"],
                   _edges=schema["edges"])


class AllArchive(_OwnCellArchive):
    """Darwin Gödel Machine archive: every valid child is admitted as its own cell."""

    kind = "all"

    def _place(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float) -> AddResult:
        return self._admit(agent_id, fitness, x, novelty)

    @classmethod
    def _from_schema(cls, schema: dict) -> "AllArchive":
        return cls(space=schema["space"], fitness_offset=schema["fitness_offset"], k=schema["k"],
                   _edges=schema["edges"])


_KIND_CLASSES: dict[str, type[Archive]] = {
    "grid": GridArchive,
    "cvt": CVTArchive,
    "novelty": NoveltyArchive,
    "all": AllArchive,
}


def make_archive(kind: str, *, space: DescriptorSpace | dict, fitness_offset: float, seed: int = 0,
                 **params: Any) -> Archive:
    """A new archive of ``kind`` (one of ARCHIVE_KINDS); ``seed`` drives the CVT sample.

    ValueError naming an unknown kind (and the valid ones) or unknown parameters.
    """
    cls = _KIND_CLASSES.get(kind)
    if cls is None:
        raise ValueError(f"unknown archive kind {kind!r}; valid kinds: {', '.join(ARCHIVE_KINDS)}")
    bad = sorted(p for p in params if p.startswith("_"))
    if bad:
        raise ValueError(f"unknown parameter(s) {bad} for archive kind {kind!r}")
    if kind == "cvt":
        params["seed"] = seed
    return cls(space=space, fitness_offset=fitness_offset, **params)


def restore_archive(*, schema: dict, state: dict, elites: list[dict]) -> Archive:
    """Rebuild an archive from its schema, state and elites; dispatches on ``schema['kind']``."""
    return Archive.restore(schema=schema, state=state, elites=elites)
