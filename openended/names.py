"""The user-facing names: archive kinds, selection strategies, operators, sandbox kinds, the embedded model.

Config validation, the CLI, the portfolio, the registries and the docs all read these; a new
name is added here once.
"""

from __future__ import annotations

from typing import Literal, get_args

Files = dict[str, bytes]
"""An agent's genome: relative path -> file contents."""

ArchiveKind = Literal["grid", "cvt", "novelty", "all"]
ARCHIVE_KINDS: tuple[str, ...] = get_args(ArchiveKind)

SelectionStrategy = Literal["uniform", "fitness", "tournament", "score_child", "novelty", "curiosity"]
SELECTION_STRATEGIES: tuple[str, ...] = get_args(SelectionStrategy)

LLMOperator = Literal["llm_diff", "llm_rewrite", "llm_crossover"]
LLM_OPERATORS: tuple[str, ...] = get_args(LLMOperator)
OperatorName = Literal["gaussian", "noop", "ast", "llm_diff", "llm_rewrite", "llm_crossover"]
OPERATORS: tuple[str, ...] = get_args(OperatorName)
CODE_OPERATORS: tuple[str, ...] = ("ast", "noop", *LLM_OPERATORS)
PARAMS_OPERATORS: tuple[str, ...] = ("gaussian", "noop")
# Operators that make a root agent from nothing: the task's seed, a random genome. (A user's
# folder, operator "given", is stored as it is and never mutated.)
ROOT_OPERATORS: tuple[str, ...] = ("seed", "random")

SandboxKind = Literal["auto", "docker", "process", "inprocess"]
SANDBOX_KINDS: tuple[str, ...] = get_args(SandboxKind)
SandboxMode = Literal["pool", "fresh"]

LOCAL_MODEL = "local-gemma3-270m"
"""The embedded model's name in configs, the store and reports."""
