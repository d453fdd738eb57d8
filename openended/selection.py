"""Parent selection over a QD archive, driven by a seeded ``np.random.Generator``.

Strategies (weights are per archive member; a member is picked with probability weight / sum):

``uniform``
    every member equally likely.
``fitness``
    fitness-proportional: weight = fitness - min(fitness) + eps, eps = 1e-6 * (max - min) (1.0 when
    all fitnesses are equal), so negative fitness works and the worst member keeps a small chance.
``tournament``
    ``size`` members (default 3) drawn uniformly with replacement; the best fitness wins (ties: the
    first drawn). With ``recent`` > 0 the entrants come from the ``recent`` most recently added
    members only (default 0: every member): fitness-driven search over the same steady-state
    population as ``novelty``'s, its matched control.
``score_child``
    Darwin Gödel Machine: f = min-max normalised fitness in [0, 1] (0.5 when all equal);
    weight = sigmoid(``lam`` * (f - ``midpoint``)) / (1 + children), lam = 10, midpoint = 0.5.
``novelty``
    steady-state novelty search: among the ``recent`` most recently added members (default 250,
    the "population"; 0 = every member), weight = (novelty at admission floored at ``eps``,
    default 1e-9) ** ``power`` (default 3). A recent member's novelty at admission is close to its
    current novelty, which an old member's is not. The cube concentrates the choice on the
    population's frontier: with ``power = 1`` the population drifted into dead ends of the
    deceptive maze on 4 of 40 maze-hard seeds (unsolved at 50,000 evaluations).
``curiosity``
    Go-Explore style: weight = (1 + discoveries) / sqrt(1 + children), where children counts the
    times the member was chosen as a parent (each choice proposes one child) and discoveries the
    children that entered a new archive cell. Rarely-chosen and productive members are favoured.
``latest``
    always the most recently proposed member (the highest agent id in the archive): the Darwin Gödel
    Machine's ``no_darwin`` comparison, which keeps extending its latest agent instead of an archive.
``clade``
    after the Huxley–Gödel Machine: Thompson sampling on the successes of each member's whole subtree
    (Beta(``prior`` + successes, ``prior`` + failures), default prior 1), not on its own score; the
    statistics are ``LineageCounts.clades`` (:mod:`openended.clades`), which the campaign keeps when it
    uses this strategy (without them every member's posterior is the prior).

All strategies are vectorised over the members (no Python loop over members).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from openended.clades import Clades
from openended.names import SELECTION_STRATEGIES
from openended.qd import Archive

__all__ = ["LineageCounts", "SELECTION_STRATEGIES", "select_parents"]


class LineageCounts:
    """Per agent id: children proposed (= times chosen as parent) and discoveries (new cells); and, for
    the ``clade`` strategy only, each clade's trials and successes (``clades``; None when not kept).

    Arrays indexed by agent id (ids are dense 0..N), grown by doubling.
    """

    def __init__(self, capacity: int = 1024, clades: Clades | None = None):
        cap = max(16, int(capacity))
        self._children = np.zeros(cap, dtype=np.int64)
        self._discoveries = np.zeros(cap, dtype=np.int64)
        self.clades = clades

    def _ensure(self, max_id: int) -> None:
        cap = len(self._children)
        if max_id < cap:
            return
        while cap <= max_id:
            cap *= 2
        for name in ("_children", "_discoveries"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=np.int64)
            new[: len(old)] = old
            setattr(self, name, new)

    @staticmethod
    def _id(agent_id: Any) -> int:
        if isinstance(agent_id, bool) or not isinstance(agent_id, (int, np.integer)) or agent_id < 0:
            raise ValueError(f"agent id must be an integer >= 0, got {agent_id!r}")
        return int(agent_id)

    def note_child(self, parent_id: int, child_id: int | None = None) -> None:
        """A child (``child_id``, when known) of ``parent_id`` was proposed (the parent was chosen once more)."""
        p = self._id(parent_id)
        self._ensure(p)
        self._children[p] += 1
        if self.clades is not None and child_id is not None:
            self.clades.note_proposed(self._id(child_id), p)

    def note_discovery(self, parent_id: int) -> None:
        """A child of ``parent_id`` entered a new archive cell."""
        p = self._id(parent_id)
        self._ensure(p)
        self._discoveries[p] += 1

    def _get(self, arr_name: str, agent_ids: Any) -> np.ndarray:
        ids = np.asarray(agent_ids, dtype=np.int64)
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0:
                raise ValueError(f"agent ids must be >= 0, got {lo}")
            self._ensure(hi)
        return getattr(self, arr_name)[ids]

    def children(self, agent_ids: Any) -> np.ndarray:
        """Children proposed per agent id, int64 array shaped like ``agent_ids``."""
        return self._get("_children", agent_ids)

    def chosen(self, agent_ids: Any) -> np.ndarray:
        """Times chosen as parent (each choice proposes one child, so equal to :meth:`children`)."""
        return self._get("_children", agent_ids)

    def discoveries(self, agent_ids: Any) -> np.ndarray:
        """Children that entered a new cell, per agent id."""
        return self._get("_discoveries", agent_ids)

    @classmethod
    def from_counts(cls, children: dict[int, int], discoveries: dict[int, int]) -> LineageCounts:
        """Rebuild from ``{agent_id: count}`` maps (as stored in the lineage database)."""
        c = cls()
        for mapping, name in ((children, "_children"), (discoveries, "_discoveries")):
            if mapping:
                ids = np.fromiter((cls._id(int(k)) for k in mapping), dtype=np.int64, count=len(mapping))
                vals = np.fromiter((int(v) for v in mapping.values()), dtype=np.int64, count=len(mapping))
                c._ensure(int(ids.max()))
                getattr(c, name)[ids] = vals
        return c

    def to_counts(self) -> tuple[dict[int, int], dict[int, int]]:
        """The non-zero counts as ``(children, discoveries)`` maps."""
        out = []
        for arr in (self._children, self._discoveries):
            nz = np.flatnonzero(arr)
            out.append(dict(zip(nz.tolist(), arr[nz].tolist(), strict=True)))
        return out[0], out[1]


_BLOCK = 256


def _weighted_choice(weights: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n indices drawn with replacement with probability weights / weights.sum() (weights > 0).

    For few draws a two-level scheme (block sums, then a cumulative sum inside the chosen block)
    avoids a full ``np.cumsum``, which is several times slower than ``sum`` at 100,000 members.
    """
    m = len(weights)
    if n > 64 or m <= 4 * _BLOCK:
        cs = np.cumsum(weights)
        u = rng.random(n) * cs[-1]
        return np.minimum(np.searchsorted(cs, u, side="right"), m - 1)
    nb = -(-m // _BLOCK)
    full = (m // _BLOCK) * _BLOCK
    bsum = np.empty(nb)
    bsum[: m // _BLOCK] = weights[:full].reshape(-1, _BLOCK).sum(axis=1)
    if full < m:
        bsum[-1] = weights[full:].sum()
    bcs = np.cumsum(bsum)
    u = rng.random(n) * bcs[-1]
    blocks = np.minimum(np.searchsorted(bcs, u, side="right"), nb - 1)
    out = np.empty(n, dtype=np.int64)
    for i, (b, ui) in enumerate(zip(blocks.tolist(), u.tolist(), strict=True)):
        start = b * _BLOCK
        stop = min(start + _BLOCK, m)
        r = ui - (bcs[b - 1] if b else 0.0)
        cs = np.cumsum(weights[start:stop])
        out[i] = start + min(int(np.searchsorted(cs, r, side="right")), stop - start - 1)
    return out


# Steady-state novelty search: the "population" is the most recently added members, each drawn with
# probability proportional to its novelty cubed (the first power lost 4 of 40 maze-hard seeds).
DEFAULT_RECENT = 250
DEFAULT_POWER = 3.0

# Each strategy's parameters and their defaults.
STRATEGY_PARAMS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "fitness": {},
    "tournament": {"size": 3, "recent": 0},
    "score_child": {"lam": 10.0, "midpoint": 0.5},
    "novelty": {"eps": 1e-9, "recent": DEFAULT_RECENT, "power": DEFAULT_POWER},
    "curiosity": {},
    "latest": {},
    "clade": {"prior": 1.0},
}


def _number(value: Any, *, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, (int, np.integer))
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


# What each strategy parameter's value must be: (test, the words for it).
_PARAM_RULES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("tournament", "size"): (lambda v: _number(v, integer=True) and v >= 1, "an integer >= 1"),
    ("tournament", "recent"): (lambda v: _number(v, integer=True) and v >= 0, "an integer >= 0"),
    ("score_child", "lam"): (_number, "a finite number"),
    ("score_child", "midpoint"): (_number, "a finite number"),
    ("novelty", "eps"): (lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("novelty", "recent"): (lambda v: _number(v, integer=True) and v >= 0, "an integer >= 0"),
    ("novelty", "power"): (lambda v: _number(v) and v > 0, "a number > 0"),
    ("clade", "prior"): (lambda v: _number(v) and v > 0, "a number > 0"),
}


def check_params(strategy: str, params: dict) -> dict:
    """The strategy's parameters with defaults filled in; ValueError naming an unknown strategy or parameter,
    or a value it cannot take (what it must be, and what it got)."""
    if strategy not in STRATEGY_PARAMS:
        raise ValueError(f"unknown selection strategy {strategy!r}; "
                         f"valid strategies: {', '.join(SELECTION_STRATEGIES)}")
    checked = _params(strategy, params, STRATEGY_PARAMS[strategy])
    for name, value in checked.items():
        test, words = _PARAM_RULES.get((strategy, name), (lambda v: True, ""))
        if not test(value):
            raise ValueError(f"{strategy} {name} must be {words}, got {value!r}")
    return checked


def _clades(counts: LineageCounts) -> Clades:
    # None: no statistics kept, so nothing observed yet; every member's posterior is the prior
    return counts.clades if counts.clades is not None else Clades()


def _params(strategy: str, params: dict, allowed: dict[str, Any]) -> dict:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for selection strategy {strategy!r}"
                         f" (valid: {sorted(allowed) or 'none'})")
    return {**allowed, **params}


def selection_weights(strategy: str, archive: Archive, counts: LineageCounts, **params: Any) -> np.ndarray:
    """The unnormalised weight of each member (aligned with ``archive.members()``) for a
    weight-based strategy (all but ``tournament``)."""
    m = archive.members()
    n = archive.size
    if strategy == "uniform":
        check_params(strategy, params)
        return np.ones(n)
    if strategy == "fitness":
        check_params(strategy, params)
        f = m["fitness"]
        lo, hi = f.min(), f.max()
        eps = 1e-6 * (hi - lo) if hi > lo else 1.0
        return (f - lo) + eps
    if strategy == "score_child":
        p = check_params(strategy, params)
        f = m["fitness"]
        lo, hi = f.min(), f.max()
        fn = (f - lo) / (hi - lo) if hi > lo else np.full(n, 0.5)
        sig = 1.0 / (1.0 + np.exp(-float(p["lam"]) * (fn - float(p["midpoint"]))))
        return sig / (1.0 + counts.children(m["agent_id"]))
    if strategy == "novelty":
        p = check_params("novelty", params)
        w = np.maximum(m["novelty"], float(p["eps"])) ** float(p["power"])
        recent = _recent_slots(archive, int(p["recent"]))
        if recent is not None:
            mask = np.zeros(n)
            mask[recent] = 1.0
            w = w * mask
        return w
    if strategy == "curiosity":
        check_params(strategy, params)
        ids = m["agent_id"]
        return (1.0 + counts.discoveries(ids)) / np.sqrt(1.0 + counts.children(ids))
    if strategy == "latest":
        check_params(strategy, params)
        w = np.zeros(n)
        w[int(np.argmax(m["agent_id"]))] = 1.0
        return w
    if strategy == "clade":  # the posterior mean (selection itself samples, see select_parents)
        prior = float(check_params("clade", params)["prior"])
        clades = _clades(counts)
        trials, successes = clades.trials(m["agent_id"]), clades.successes(m["agent_id"])
        return (prior + successes) / (2 * prior + trials)
    raise ValueError(f"unknown selection strategy {strategy!r}; valid strategies: {', '.join(SELECTION_STRATEGIES)}")


def _recent_slots(archive: Archive, recent: int) -> np.ndarray | None:
    """Positions (in ``members()``) of the ``recent`` most recently added members (>= 0, as
    :func:`check_params` made sure), or None for all."""
    size = archive.size
    if recent == 0 or recent >= size:
        return None
    if archive.kind in ("novelty", "all"):
        # these archives only append, in the order children were added
        return np.arange(size - recent, size)
    # grid/cvt members are in cell order; agent ids grow with proposal order
    return np.argpartition(archive.members()["agent_id"], size - recent)[size - recent:]


def select_parents(strategy: str, archive: Archive, counts: LineageCounts, rng: np.random.Generator,
                   n: int = 1, **params: Any) -> np.ndarray:
    """``n`` parent agent ids (int64 array, drawn with replacement) from ``archive``'s members.

    ValueError naming an unknown strategy (and the valid ones), an unknown parameter, or an empty
    archive. The same generator state gives the same picks.
    """
    if strategy not in SELECTION_STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; "
                         f"valid strategies: {', '.join(SELECTION_STRATEGIES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    size = archive.size
    if size == 0:
        raise ValueError("cannot select parents from an empty archive")
    ids = archive.members()["agent_id"]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if strategy == "uniform":
        check_params(strategy, params)
        return ids[rng.integers(0, size, size=n)].copy()
    if strategy == "tournament":
        p = check_params(strategy, params)
        pool = _recent_slots(archive, int(p["recent"]))
        entrants = rng.integers(0, size if pool is None else len(pool), size=(n, int(p["size"])))
        if pool is not None:
            entrants = pool[entrants]
        fit = archive.members()["fitness"][entrants]
        winners = entrants[np.arange(n), np.argmax(fit, axis=1)]
        return ids[winners].copy()
    if strategy == "latest":
        check_params(strategy, params)
        return np.full(n, ids.max(), dtype=np.int64)
    if strategy == "clade":
        prior = float(check_params("clade", params)["prior"])
        return ids[_clades(counts).thompson(ids, rng, n, prior)].copy()
    if strategy == "novelty":
        p = check_params("novelty", params)
        recent = _recent_slots(archive, int(p["recent"]))
        if recent is not None:
            w = np.maximum(archive.members()["novelty"][recent], float(p["eps"])) ** float(p["power"])
            return ids[recent[_weighted_choice(w, rng, n)]].copy()
    w = selection_weights(strategy, archive, counts, **params)
    return ids[_weighted_choice(w, rng, n)].copy()
