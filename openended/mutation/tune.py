"""The ``tune`` operator: a code child's numeric literals tuned by a small derivative-free search.

A model proposes structure; the constants it writes are guesses. ``tune`` takes an agent and runs a
(1+lambda) evolution strategy over the float literals of its code file (ints too with ``ints = true``),
in one Ray task: each round perturbs the best constants so far into ``batch`` candidates, the
worker evaluates them, and the best one that beats the incumbent by more than the task's tolerance
becomes the incumbent. Every candidate is a child of its own (operator ``tune``, one row each, all
children of the tuned agent), so the store and the archive see every evaluation.

A tune group's members are consecutive child ids whose seeds are the group's seed plus the
member's index (:func:`group_of`): a resume re-runs a group from its recorded seeds, and candidate
``i`` depends only on the results of candidates before it, so the re-run makes the same candidates.

The tuned agent is chosen by fitness (the best of ``tournament`` members drawn from the newest), not by
the campaign's selection: a novelty-chosen parent is often a worse one, and tuning it rarely beats the
archive's best.

Literals are rewritten in place in the source text, so comments and formatting are kept.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openended.names import Files

# Member index in a seed's low bits: a group has at most this many members.
INDEX_BITS = 8
MAX_EVALUATIONS = 1 << INDEX_BITS
DEFAULTS = {"evaluations": 8, "batch": 4, "sigma": 0.1, "ints": False, "tournament": 8}
PARAMS = frozenset(DEFAULTS)


def group_seed(seed: int) -> int:
    """A group's seed from a freshly drawn one: its low bits free for the members' indices."""
    return seed & ~(MAX_EVALUATIONS - 1)


def group_of(agent_id: int, seed: int) -> tuple[int, int]:
    """(group's seed, its first member's child id) of the member ``agent_id`` recorded with ``seed``."""
    index = seed & (MAX_EVALUATIONS - 1)
    return seed - index, agent_id - index


@dataclass(frozen=True, slots=True)
class TuneParams:
    """The operator's parameters (the task's ``[operators.tune]`` table, then the campaign's)."""

    evaluations: int = 8
    batch: int = 4
    sigma: float = 0.1
    ints: bool = False
    # The tuned agent: the fittest of this many drawn from the newest members (0: the campaign's selection
    # picks it, as for any operator). Tuning is exploitation; novelty-chosen parents are often the worse.
    tournament: int = 8

    @classmethod
    def of(cls, params: dict) -> TuneParams:
        """Checked parameters; ValueError naming a bad one."""
        unknown = sorted(set(params) - PARAMS)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for operator tune (valid: {sorted(PARAMS)})")
        merged = {**DEFAULTS, **params}
        evaluations, batch, sigma, ints = merged["evaluations"], merged["batch"], merged["sigma"], merged["ints"]
        tournament = merged["tournament"]
        if not isinstance(evaluations, int) or not 1 <= evaluations <= MAX_EVALUATIONS:
            raise ValueError(f"tune: evaluations must be an integer from 1 to {MAX_EVALUATIONS}, not {evaluations!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"tune: batch must be a positive integer, not {batch!r}")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma <= 10:
            raise ValueError(f"tune: sigma must be a number in (0, 10], not {sigma!r}")
        if not isinstance(ints, bool):
            raise ValueError(f"tune: ints must be true or false, not {ints!r}")
        if isinstance(tournament, bool) or not isinstance(tournament, int) or tournament < 0:
            raise ValueError(f"tune: tournament must be an integer >= 0, not {tournament!r}")
        return cls(evaluations, batch, float(sigma), ints, tournament)


@dataclass(frozen=True, slots=True)
class Literal:
    """One tunable literal: where its text is in the source, and its value (sign included)."""

    start: int  # offsets into the source text
    end: int
    value: int | float


def literals(source: str, *, ints: bool = False) -> list[Literal]:
    """The source's tunable numeric literals in text order (a unary minus is part of its literal).
    SyntaxError for source that does not parse."""
    tree = ast.parse(source)
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line.encode("utf-8")))
    raw = source.encode("utf-8")  # ast offsets are in UTF-8 bytes

    def offset(line: int, col: int) -> int:
        return len(raw[:line_starts[line - 1] + col].decode("utf-8"))

    negated = {id(node.operand) for node in ast.walk(tree)
               if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)}
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    kinds = (int, float) if ints else (float,)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and type(node.value) in kinds):
            continue
        if node.end_lineno is None or node.end_col_offset is None:
            continue
        target: ast.AST = parents[id(node)] if id(node) in negated else node
        value = -node.value if id(node) in negated else node.value
        assert target.end_lineno is not None and target.end_col_offset is not None
        found.append(Literal(offset(target.lineno, target.col_offset), offset(target.end_lineno,
                                                                              target.end_col_offset), value))
    found.sort(key=lambda lit: lit.start)
    return found


def rewrite(source: str, sites: Sequence[Literal], values: Sequence[int | float]) -> str:
    """``source`` with each literal's text replaced by its new value's."""
    out, at = [], 0
    for site, value in zip(sites, values, strict=True):
        out.append(source[at:site.start])
        text = repr(value)
        # a negative value keeps precedence in brackets (-2.0 ** x is not (-2.0) ** x); once is enough, or
        # a lineage of tuned children would wrap it once more each generation
        bracketed = source[:site.start].rstrip().endswith("(") and source[site.end:].lstrip().startswith(")")
        out.append(f"({text})" if text.startswith("-") and not bracketed else text)
        at = site.end
    out.append(source[at:])
    return "".join(out)


class TuneSearch:
    """The (1+lambda) search over one agent's literals; see the module docstring."""

    def __init__(self, parent: Files, code_file: str, parent_fitness: float | None, params: TuneParams,
                 tolerance: float = 0.0):
        if code_file not in parent:
            raise ValueError(f"the agent has no {code_file} to tune")
        self.files = parent
        self.code_file = code_file
        self.source = parent[code_file].decode("utf-8")
        self.sites = literals(self.source, ints=params.ints)
        if not self.sites:
            kinds = "numeric" if params.ints else "float"
            raise ValueError(f"{code_file} has no {kinds} literals to tune")
        self.params = params
        self.tolerance = tolerance
        self.best = [site.value for site in self.sites]
        self.best_fitness = -math.inf if parent_fitness is None else parent_fitness
        self.sigma = params.sigma
        self._round: list[list[int | float]] = []  # the literals of the round's children

    def round(self, seeds: Sequence[int]) -> list[Files]:
        """One round's children, one per member seed: the incumbent's literals, some perturbed."""
        self._round = [self._values(seed) for seed in seeds]
        return [{**self.files, self.code_file: rewrite(self.source, self.sites, values).encode("utf-8")}
                for values in self._round]

    def _values(self, seed: int) -> list[int | float]:
        rng = np.random.default_rng(seed)
        n = len(self.best)
        chosen = rng.random(n) < min(1.0, 2.0 / n)
        if not chosen.any():
            chosen[int(rng.integers(n))] = True
        noise = rng.standard_normal(n)
        return [self._moved(v, float(z), rng) if pick else v
                for v, z, pick in zip(self.best, noise, chosen, strict=True)]

    def _moved(self, value: int | float, z: float, rng: np.random.Generator) -> int | float:
        step = self.sigma * (abs(value) if value != 0 else 1.0) * z
        if isinstance(value, int):
            moved = int(round(value + step))
            return moved if moved != value else value + int(rng.choice((-1, 1)))
        moved = float(f"{value + step:.8g}")  # 8 significant digits: fine steps, a readable program
        return moved if math.isfinite(moved) else value

    def tell(self, fitness: Sequence[float | None]) -> None:
        """The round's results (None: the candidate failed); the best one that beats the incumbent by more
        than the tolerance becomes the incumbent, and the step size grows on success and shrinks without."""
        scored = [(f, i) for i, f in enumerate(fitness) if f is not None and math.isfinite(f)]
        best = max(scored, default=None)
        if best is not None and best[0] > self.best_fitness + self.tolerance:
            self.best = self._round[best[1]]
            self.best_fitness = best[0]
            self.sigma = min(10.0, self.sigma * 1.5)
        else:
            self.sigma = max(1e-6, self.sigma * 0.6)
