"""Clade statistics for the ``clade`` selection strategy (after the Huxley–Gödel Machine, arXiv 2510.21614).

A member's clade is the member and every descendant it has produced so far. The strategy judges a member
by what its clade achieved, not by its own score: an agent whose children keep improving is worth
extending even when its own score is modest (the paper's clade-metaproductivity).

Each finished child adds one trial to its own clade and to the clade of every ancestor, and its success,
a number in [0, 1]:

- when the task's fitness scale has an ``upper`` bound, the child's fitness rescaled to [0, 1] between
  ``lower`` and ``upper`` (for the coding-agent task: the share of problems solved), and 0 when it failed;
- otherwise 1 when the child entered the archive and 0 when it did not.

Selection then draws, per parent wanted, one sample from Beta(prior + successes, prior + failures) for
every archive member and takes the highest (Thompson sampling).

The statistics are sums applied in the order children finished (the store's ``finish_seq``), so a
resume rebuilds exactly the numbers an uninterrupted campaign holds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

ROOT = -1  # the parent slot of a root agent (and of an id never proposed)


class Clades:
    """Per agent id: its parent, and the trials and successes of its clade (arrays grown by doubling)."""

    def __init__(self, fitness_lower: float = 0.0, fitness_upper: float | None = None, capacity: int = 1024):
        if fitness_upper is not None and not fitness_upper > fitness_lower:
            raise ValueError(f"fitness upper ({fitness_upper}) must be above lower ({fitness_lower})")
        self.lower = float(fitness_lower)
        self.upper = None if fitness_upper is None else float(fitness_upper)
        cap = max(16, int(capacity))
        self._parent = np.full(cap, ROOT, dtype=np.int64)
        self._trials = np.zeros(cap)
        self._successes = np.zeros(cap)

    def _ensure(self, agent_id: int) -> None:
        cap = len(self._parent)
        if agent_id < cap:
            return
        while cap <= agent_id:
            cap *= 2
        parent = np.full(cap, ROOT, dtype=np.int64)
        parent[: len(self._parent)] = self._parent
        trials, successes = np.zeros(cap), np.zeros(cap)
        trials[: len(self._trials)] = self._trials
        successes[: len(self._successes)] = self._successes
        self._parent, self._trials, self._successes = parent, trials, successes

    def success(self, status: str, fitness: float | None) -> float:
        """What one finished child counts for its clades, in [0, 1] (see the module docstring)."""
        if self.upper is None:
            return 1.0 if status == "archived" else 0.0
        if status == "failed" or fitness is None or not np.isfinite(fitness):
            return 0.0
        return float(np.clip((fitness - self.lower) / (self.upper - self.lower), 0.0, 1.0))

    def note_proposed(self, agent_id: int, parent_id: int | None) -> None:
        """Agent ``agent_id`` was proposed as a child of ``parent_id`` (None: a root)."""
        self._ensure(max(agent_id, parent_id if parent_id is not None else 0))
        self._parent[agent_id] = ROOT if parent_id is None else parent_id

    def note_finished(self, agent_id: int, status: str, fitness: float | None) -> None:
        """Agent ``agent_id`` finished: one trial, and its success, for its clade and every ancestor's."""
        self._ensure(agent_id)
        value = self.success(status, fitness)
        node, steps = agent_id, 0
        while node != ROOT:
            self._trials[node] += 1.0
            self._successes[node] += value
            node = int(self._parent[node])
            steps += 1
            if steps > len(self._parent):  # a parent cycle would be a corrupt store: never loop forever
                raise ValueError(f"agent {agent_id}'s ancestry has a cycle")

    def trials(self, agent_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(agent_ids, dtype=np.int64)
        if ids.size:
            self._ensure(int(ids.max()))
        return self._trials[ids]

    def successes(self, agent_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(agent_ids, dtype=np.int64)
        if ids.size:
            self._ensure(int(ids.max()))
        return self._successes[ids]

    def thompson(self, agent_ids: np.ndarray, rng: np.random.Generator, n: int, prior: float = 1.0) -> np.ndarray:
        """``n`` positions in ``agent_ids``, each the highest of one Beta sample per member."""
        trials, successes = self.trials(agent_ids), self.successes(agent_ids)
        alpha = prior + successes
        beta = prior + np.maximum(trials - successes, 0.0)
        draws = rng.beta(alpha, beta, size=(n, len(agent_ids)))
        return np.argmax(draws, axis=1)

    @classmethod
    def rebuild(cls, parents: Iterable[tuple[int, int | None]], finished: Iterable[tuple[int, str, float | None]],
                fitness_lower: float = 0.0, fitness_upper: float | None = None) -> Clades:
        """From the store: every agent's ``(id, parent_id)``, and the finished ones' ``(id, status, fitness)``
        in the order they finished."""
        clades = cls(fitness_lower, fitness_upper)
        for agent_id, parent_id in parents:
            clades.note_proposed(int(agent_id), None if parent_id is None else int(parent_id))
        for agent_id, status, fitness in finished:
            clades.note_finished(int(agent_id), status, fitness)
        return clades


def clades_from_store(db, fitness_lower: float = 0.0, fitness_upper: float | None = None) -> Clades:
    """The clade statistics of a stored campaign (``db``: an ``archive_db.ArchiveDB``)."""
    parents = db.conn.execute("SELECT id, parent_id FROM agents ORDER BY id")
    finished = db.conn.execute("SELECT id, status, fitness FROM agents WHERE status IN ('archived', 'rejected', "
                               "'failed') ORDER BY finish_seq, id")
    return Clades.rebuild(parents, finished, fitness_lower, fitness_upper)
