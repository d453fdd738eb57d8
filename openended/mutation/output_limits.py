"""How many tokens an LLM operator's answer may have: sized to the program it rewrites.

A fixed limit is wrong both ways: too small and every rewrite of a long program is cut off (and a cut
program fails its evaluation with a misleading error); too large and a model that rambles spends the
whole limit on every call. So each call's ``max_tokens`` is ``factor`` x the parent's estimated tokens
(its code file's characters / 4; for ``llm_crossover`` the larger parent's), at least ``floor`` and at
most ``cap``. Each of the three comes from the first level that sets it: the model's own table
(``[[llm.models]] max_output``, or ``[llm] local_max_output`` for the embedded model), then
``[llm.max_output]``, then :data:`DEFAULTS`. An answer that reaches its limit is not evaluated: the
child fails at stage ``mutation`` with kind ``truncated`` (``openended.mutation.llm_ops``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from openended.names import LLM_OPERATORS, LOCAL_MODEL

# ``config`` below is an openended.config.CampaignConfig and the tables its OutputLimits; they are not
# imported, because config validates its limits through this module.


@dataclass(frozen=True, slots=True)
class Limit:
    """A resolved output limit."""

    factor: float
    floor: int
    cap: int

    def tokens(self, parent_tokens: int) -> int:
        """``max_tokens`` for a parent of ``parent_tokens`` estimated tokens."""
        return max(self.floor, min(self.cap, math.ceil(self.factor * parent_tokens)))


# An edit copies the lines it replaces and writes their replacement (the whole program at most: 2x);
# a rewrite or a crossover writes a whole program, with room to grow to twice the parent's size.
DEFAULTS: dict[str, Limit] = {
    "llm_diff": Limit(factor=2.0, floor=256, cap=4096),
    "llm_rewrite": Limit(factor=2.0, floor=256, cap=4096),
    "llm_crossover": Limit(factor=2.0, floor=256, cap=4096),
}
assert set(DEFAULTS) == set(LLM_OPERATORS), "every LLM operator has a default output limit"


def estimate_tokens(code: str) -> int:
    """About four characters per token (the client's own estimate when a server sends no usage)."""
    return max(1, math.ceil(len(code) / 4))


def model_limits(config: Any, model: str | None) -> Any:
    """The model's own table (None for a model the config does not name)."""
    if model == LOCAL_MODEL:
        return config.llm.local_max_output
    return next((m.max_output for m in config.llm.models if m.name == model), None)


def resolve(config: Any, model: str | None, operator: str) -> Limit:
    """The limit ``operator`` answers under when ``model`` is asked (ValueError for a non-LLM operator)."""
    if operator not in DEFAULTS:
        raise ValueError(f"operator {operator!r} has no output limit (LLM operators: {', '.join(DEFAULTS)})")
    own = model_limits(config, model)
    levels: list[Any] = [getattr(t, operator) for t in (own, config.llm.max_output) if t is not None]
    default = DEFAULTS[operator]

    def first(field: str):
        return next((getattr(level, field) for level in levels if getattr(level, field) is not None),
                    getattr(default, field))

    return Limit(factor=float(first("factor")), floor=int(first("floor")), cap=int(first("cap")))


def max_output_tokens(config: Any, model: str | None, operator: str, *codes: str) -> int:
    """``max_tokens`` for ``operator`` on ``model`` with parents of source ``codes`` (the largest counts)."""
    parent = max((estimate_tokens(c) for c in codes), default=1)
    return resolve(config, model, operator).tokens(parent)


def check_output_limits(config: Any) -> None:
    """ValueError naming the key of any model and operator whose resolved floor is above its cap."""
    tables: list[tuple[str, str | None]] = [("llm.max_output", None)]
    tables += [(f"llm.models[{i}].max_output", m.name) for i, m in enumerate(config.llm.models)]
    tables.append(("llm.local_max_output", LOCAL_MODEL))
    for key, model in tables:
        for operator in LLM_OPERATORS:
            limit = resolve(config, model, operator)
            if limit.floor > limit.cap:
                raise ValueError(f"key '{key}.{operator}': floor {limit.floor} is above cap {limit.cap} "
                                 f"(after the defaults and [llm.max_output] are applied)")
