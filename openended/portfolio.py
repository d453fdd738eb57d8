"""The mutation portfolio: which operator (and which model) makes the next child.

Each arm is an (operator, model) pair: LLM operators once per configured model, LLM-free
operators with no model. A Bernoulli Thompson-sampling bandit shares children out by how
often each arm's finished children entered the archive, with a floor of uniform exploration.
Its counts are the store's own rows (operator, model, status), so it survives any stop and
resume without state of its own; draws use the campaign's seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openended.names import MODEL_OPERATORS, WHOLE_PROGRAM_OPERATORS


@dataclass(frozen=True)
class Arm:
    operator: str
    model: str | None = None

    @property
    def label(self) -> str:
        return self.operator if self.model is None else f"{self.operator}@{self.model}"


class Portfolio:
    """A Thompson-sampling bandit over arms, counting archived vs finished children."""

    def __init__(self, arms: list[Arm], *, explore: float = 0.1, children_per_pick: dict[str, int] | None = None):
        if not arms:
            raise ValueError("a mutation portfolio needs at least one operator")
        self.arms = list(arms)
        self.explore = float(explore)
        self.archived = np.zeros(len(arms))
        self.finished = np.zeros(len(arms))
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        # An arm whose pick makes several children (a tune group) counts them as one trial: else its
        # children, each nearly always valid, would outvote every one-child arm and take nearly all picks.
        # The counts stay whole numbers (the same live and restored); the weight applies at each draw.
        per_pick = children_per_pick or {}
        self._weight = np.array([1.0 / per_pick.get(arm.operator, 1) for arm in self.arms])

    @classmethod
    def build(cls, operators: list[str], models: list[str], *, explore: float = 0.1,
              children_per_pick: dict[str, int] | None = None, edits_only: frozenset[str] = frozenset()) -> Portfolio:
        """One arm per LLM-free operator and one per model operator x model; a model in ``edits_only`` gets
        no whole-program arm (llm_rewrite, llm_crossover) while another model does them."""
        arms = []
        for op in operators:
            if op in MODEL_OPERATORS:
                if not models:
                    raise ValueError(f"operator {op!r} needs a model: set [llm] local = true or add [[llm.models]]")
                writers = models
                if op in WHOLE_PROGRAM_OPERATORS:
                    writers = [m for m in models if m not in edits_only] or models
                arms.extend(Arm(op, m) for m in writers)
            else:
                arms.append(Arm(op))
        return cls(arms, explore=explore, children_per_pick=children_per_pick)

    def restore(self, rows: list[dict]) -> None:
        """Counts from the store's operator_success rows (operator, model, finished, archived)."""
        for row in rows:
            model = None if row["model"] in (None, "none") else row["model"]
            i = self._index.get(Arm(row["operator"], model))
            if i is not None:
                self.finished[i] = row["finished"] or 0
                self.archived[i] = row["archived"] or 0

    def choose(self, rng: np.random.Generator, *, without: str | None = None) -> Arm:
        """The next child's arm; ``without``: an operator that cannot make this child (at least one other arm
        must be left)."""
        arms = [i for i, arm in enumerate(self.arms) if arm.operator != without]
        if not arms:
            raise ValueError(f"the portfolio has no operator but {without!r}")
        if len(arms) == 1:
            return self.arms[arms[0]]
        if rng.random() < self.explore:
            return self.arms[arms[int(rng.integers(len(arms)))]]
        draws = rng.beta(1.0 + self._weight[arms] * self.archived[arms],
                         1.0 + self._weight[arms] * (self.finished[arms] - self.archived[arms]))
        return self.arms[arms[int(np.argmax(draws))]]

    def update(self, arm: Arm, archived: bool) -> None:
        i = self._index.get(arm)
        if i is not None:
            self.finished[i] += 1
            self.archived[i] += bool(archived)

    def shares(self) -> dict[str, float]:
        """Each arm's expected success rate (posterior mean), by label."""
        means = (1.0 + self._weight * self.archived) / (2.0 + self._weight * self.finished)
        return {arm.label: float(m) for arm, m in zip(self.arms, means, strict=True)}
