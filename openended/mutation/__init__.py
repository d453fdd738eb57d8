"""Mutation operators: how a child's files are made from its parent's.

Each operator is a function ``(parent_files, rng, task, params) -> child files``. It is
deterministic given the generator, which the worker seeds from the child's recorded seed,
so a re-dispatched child (after a crash) gets the same genome.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from openended.mutation.ast_edit import EDIT_KINDS, ast_mutate, check_edit_params
from openended.mutation.gaussian import check_scale, gaussian, random_params
from openended.mutation.tune import PARAMS as TUNE_PARAMS
from openended.mutation.tune import TuneParams
from openended.names import ROOT_OPERATORS, Files
from openended.tasks import Task

Operator = Callable[[Files | None, np.random.Generator, Task, dict], Files]


def _seed(parent: Files | None, rng: np.random.Generator, task: Task, params: dict) -> Files:
    return task.seed_files()


def _random(parent: Files | None, rng: np.random.Generator, task: Task, params: dict) -> Files:
    if task.spec.param_count is None:
        raise ValueError(f"task {task.name!r} has no param_count: it cannot make random genomes")
    return random_params(
        rng,
        count=task.spec.param_count,
        scale=float(params.get("scale", task.spec.init_scale)),
        params_file=task.spec.params_file,
    )


def _gaussian(parent: Files | None, rng: np.random.Generator, task: Task, params: dict) -> Files:
    return gaussian(
        parent,
        rng,
        sigma=float(params.get("sigma", 0.1)),
        params_file=task.spec.params_file,
    )


def _ast(parent: Files | None, rng: np.random.Generator, task: Task, params: dict) -> Files:
    return ast_mutate(parent, rng, code_file=task.spec.code_file, params=params)


def _noop(parent: Files | None, rng: np.random.Generator, task: Task, params: dict) -> Files:
    return dict(parent)


OPERATORS: dict[str, Operator] = {
    "seed": _seed, "random": _random, "gaussian": _gaussian, "ast": _ast, "noop": _noop,
}
# The parameters each operator reads (from the task's [operators.NAME] table and the campaign's mutation.params).
OPERATOR_PARAMS: dict[str, set[str]] = {
    "seed": set(), "random": {"scale"}, "gaussian": {"sigma"}, "ast": {"scale", "edits", "kinds"}, "noop": set(),
    # run by the worker itself (openended.mutation.self_improve, openended.mutation.tune)
    "self_improve": {"timeout_s", "diagnosis_tokens", "editor"},
    "tune": set(TUNE_PARAMS),
}


def check_params(operator: str, params: dict) -> None:
    """ValueError naming an unknown operator, a parameter the operator does not read, or a value it cannot take."""
    if operator not in OPERATOR_PARAMS:
        raise ValueError(f"unknown mutation operator {operator!r}; known: {', '.join(OPERATOR_PARAMS)}")
    unknown = sorted(set(params) - OPERATOR_PARAMS[operator])
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for mutation operator {operator!r} "
                         f"(valid: {sorted(OPERATOR_PARAMS[operator]) or 'none'})")
    if operator in ("gaussian", "random"):  # their one parameter (sigma, scale) is a noise scale
        for name, value in params.items():
            check_scale(name, value)
    if operator == "ast":
        check_edit_params(scale=params.get("scale", 0.2), edits=params.get("edits", 1),
                          kinds=params.get("kinds", EDIT_KINDS))
    if operator == "tune":
        TuneParams.of(params)
    if operator == "self_improve":
        from openended.mutation.self_improve import editor_of

        editor_of(params)


def mutate(operator: str, parent: Files | None, rng: np.random.Generator, task: Task, params: dict) -> Files:
    """Apply a named operator; ValueError for an unknown one or a root operator given no task seed."""
    try:
        fn = OPERATORS[operator]
    except KeyError:
        raise ValueError(f"unknown mutation operator {operator!r}; known: {', '.join(OPERATORS)}") from None
    if parent is None and operator not in ROOT_OPERATORS:
        raise ValueError(f"operator {operator!r} needs a parent")
    return fn(parent, rng, task, params)
