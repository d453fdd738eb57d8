"""Member storage and the k-nearest-neighbour novelty index over it.

:class:`MemberStore` keeps the members in preallocated aligned arrays grown by doubling; a member's
place in them is its *slot*. :class:`NoveltyIndex` answers "mean distance to the k nearest
members": a ``cKDTree`` indexes a prefix of the slots, and the un-indexed tail (plus members
replaced inside the prefix since the tree was built, the *stale* slots) is brute-forced with
numpy; the tree is rebuilt when that tail grows past ``max(256, size // 32)``. The k distances are
recomputed exactly, column by column, and summed smallest first, so a novelty value does not
depend on where the tree was last rebuilt: a restored archive gives bit-identical novelty.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["MEMBER_FIELDS", "MemberStore", "NoveltyIndex"]

#: The keys of :meth:`MemberStore.view`, in order.
MEMBER_FIELDS = ("agent_id", "fitness", "descriptors", "novelty", "cell")


class MemberStore:
    """Aligned member arrays, valid on slots ``[0, size)``; capacity doubles when full.

    ``ids`` agent id, ``fitness``, ``descriptors`` (capacity, d), ``novelty`` at admission, ``cell``
    the archive cell and ``mcell`` the measurement cell (statistics) of each slot.
    """

    def __init__(self, dim: int, capacity: int = 64):
        self.dim = dim
        self.size = 0
        self._allocate(capacity)
        self._version = 0  # bumped by every change, keys the cached view
        self._view: tuple[int, dict[str, np.ndarray]] | None = None

    def _allocate(self, cap: int) -> None:
        self.ids = np.zeros(cap, dtype=np.int64)
        self.fitness = np.zeros(cap, dtype=np.float64)
        self.descriptors = np.zeros((cap, self.dim), dtype=np.float64)
        self.novelty = np.zeros(cap, dtype=np.float64)
        self.cell = np.zeros(cap, dtype=np.int64)
        self.mcell = np.zeros(cap, dtype=np.int64)

    def _grow(self) -> None:
        n = self.size
        old = (self.ids, self.fitness, self.descriptors, self.novelty, self.cell, self.mcell)
        self._allocate(2 * len(self.ids))
        new = (self.ids, self.fitness, self.descriptors, self.novelty, self.cell, self.mcell)
        for dst, src in zip(new, old, strict=True):
            dst[:n] = src[:n]

    def append(self, agent_id: int, fitness: float, x: np.ndarray, novelty: float, cell: int, mcell: int) -> int:
        """Store a new member in the next slot; returns the slot."""
        if self.size == len(self.ids):
            self._grow()
        s = self.size
        self.ids[s] = agent_id
        self.fitness[s] = fitness
        self.descriptors[s] = x
        self.novelty[s] = novelty
        self.cell[s] = cell
        self.mcell[s] = mcell
        self.size = s + 1
        self._version += 1
        return s

    def replace(self, slot: int, agent_id: int, fitness: float, x: np.ndarray, novelty: float, mcell: int) -> None:
        """Put another member in ``slot`` (same archive cell)."""
        self.ids[slot] = agent_id
        self.fitness[slot] = fitness
        self.descriptors[slot] = x
        self.novelty[slot] = novelty
        self.mcell[slot] = mcell
        self._version += 1

    def load(self, ids: np.ndarray, fitness: np.ndarray, novelty: np.ndarray, cells: np.ndarray, X: np.ndarray,
             mcells: np.ndarray) -> None:
        """Replace every member by the given aligned arrays (n >= 1), in slot order."""
        n = len(ids)
        self._allocate(max(64, 1 << (n - 1).bit_length()))
        self.ids[:n], self.fitness[:n], self.novelty[:n], self.cell[:n], self.descriptors[:n] = (
            ids, fitness, novelty, cells, X)
        self.mcell[:n] = mcells
        self.size = n
        self._version += 1

    def view(self, order: Callable[[], np.ndarray | None]) -> dict[str, np.ndarray]:
        """Read-only arrays of length ``size`` keyed by :data:`MEMBER_FIELDS`, cached until the next change.

        ``order()`` gives the slots in the wanted order, or None for slot order.
        """
        cached = self._view
        if cached is not None and cached[0] == self._version:
            return cached[1]
        n = self.size
        slots = order()
        out = {}
        for key, arr in zip(MEMBER_FIELDS, (self.ids, self.fitness, self.descriptors, self.novelty, self.cell),
                            strict=True):
            v = arr[:n] if slots is None else arr[slots]
            v = v.view()
            v.flags.writeable = False
            out[key] = v
        self._view = (self._version, out)
        return out


class NoveltyIndex:
    """Mean Euclidean distance to the ``k`` nearest members of a :class:`MemberStore`.

    Tell it about every change: :meth:`replaced` for a slot whose member changed, then
    :meth:`changed` after any append or replace; :meth:`rebuild` after the store was loaded.
    An empty store gives 0: with nothing to be far from, the first member is not scored as the most
    novel one there will ever be (it was the diameter of the space, and with novelty-weighted
    selection the root then fathered nearly every child until it left the parents' window).
    """

    REBUILD_MIN = 256

    def __init__(self, store: MemberStore, k: int):
        self._store = store
        self.k = k
        self._tree: cKDTree | None = None  # over slots [0, indexed)
        self._indexed = 0
        self._stale = np.zeros(0, dtype=bool)  # per indexed slot: replaced since the tree was built
        self._dirty: list[int] = []  # the stale slots

    @property
    def indexed(self) -> int:
        """Members in the tree (slots ``[0, indexed)``)."""
        return self._indexed

    @property
    def stale(self) -> int:
        """Members of the tree replaced since it was built (brute-forced instead)."""
        return len(self._dirty)

    @property
    def tail(self) -> int:
        """Members brute-forced per query: the un-indexed slots and the stale ones."""
        return self._store.size - self._indexed + len(self._dirty)

    # ------------------------------------------------------------------ maintenance
    def replaced(self, slot: int) -> None:
        """The member in ``slot`` was replaced."""
        if slot < self._indexed and not self._stale[slot]:
            self._stale[slot] = True
            self._dirty.append(slot)

    def changed(self) -> None:
        """A member was appended or replaced: rebuild the tree when the tail is too long."""
        if self.tail > max(self.REBUILD_MIN, self._store.size // 32):
            self.rebuild()

    def rebuild(self) -> None:
        """Index every member."""
        n = self._store.size
        self._tree = cKDTree(self._store.descriptors[:n].copy(), balanced_tree=False, compact_nodes=False) \
            if n else None
        self._indexed = n
        self._stale = np.zeros(n, dtype=bool)
        self._dirty = []

    # ------------------------------------------------------------------ queries
    def novelty(self, X: np.ndarray) -> np.ndarray:
        """Novelty of each row of the checked descriptors ``X`` (n, d), in chunks of bounded memory."""
        out = np.empty(len(X))
        step = max(1, 4_000_000 // max(1, self._store.dim * (self.tail + self.k + 2)))
        for i in range(0, len(X), step):
            out[i : i + step] = self.knn_mean(X[i : i + step])
        return out

    def knn_mean(self, X: np.ndarray) -> np.ndarray:
        """Mean distance of each row of X (n, d) to its k nearest members; exact and order-free."""
        n = len(X)
        size = self._store.size
        if size == 0:
            return np.zeros(n)
        k = min(self.k, size)
        desc = self._store.descriptors
        d = self._store.dim
        parts: list[np.ndarray] = []

        def sqdist(M: np.ndarray, Xb: np.ndarray) -> np.ndarray:
            # M: (n, m, d) or (m, d); columnwise so each entry is computed identically everywhere
            cols = M if M.ndim == 3 else M[None]
            diff = cols[..., 0] - Xb[:, 0][:, None]
            out: np.ndarray = diff * diff
            for j in range(1, d):
                diff = cols[..., j] - Xb[:, j][:, None]
                out = out + diff * diff
            return out

        if self._tree is not None and self._indexed > 0:
            kq = min(self._indexed, k + len(self._dirty) + 2)
            _, idx = self._tree.query(X, k=list(range(1, kq + 1)))
            D = sqdist(desc[idx], X)
            if self._dirty:
                D[self._stale[idx]] = np.inf
            parts.append(D)
        if self._indexed < size:
            parts.append(sqdist(desc[self._indexed : size], X))
        if self._dirty:
            parts.append(sqdist(desc[np.asarray(self._dirty, dtype=np.int64)], X))
        D = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if D.shape[1] > k:
            D = np.partition(D, k - 1, axis=1)[:, :k]
        D = np.sqrt(np.sort(D, axis=1))
        total = D[:, 0].copy()
        for j in range(1, k):
            total += D[:, j]
        mean: np.ndarray = total / k
        return mean
