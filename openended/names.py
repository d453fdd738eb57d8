"""The user-facing names: archive kinds, selection strategies, operators, sandbox kinds, the embedded model.

Config validation, the CLI, the portfolio, the registries and the docs all read these; a new
name is added here once.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

Files = dict[str, bytes]
"""An agent's genome: relative path -> file contents."""

ArchiveKind = Literal["grid", "cvt", "novelty", "all"]
ARCHIVE_KINDS: tuple[str, ...] = get_args(ArchiveKind)

SelectionStrategy = Literal["uniform", "fitness", "tournament", "score_child", "novelty", "curiosity", "latest",
                            "clade"]
SELECTION_STRATEGIES: tuple[str, ...] = get_args(SelectionStrategy)

LLMOperator = Literal["llm_diff", "llm_rewrite", "llm_crossover"]
LLM_OPERATORS: tuple[str, ...] = get_args(LLMOperator)
# The model writes the whole program: the embedded model's hardly ever run (cut off, or changing nothing).
WHOLE_PROGRAM_OPERATORS: tuple[str, ...] = ("llm_rewrite", "llm_crossover")
# The Darwin Gödel Machine's operator: a model diagnoses the parent, then the parent agent edits its own code
# (in a sandbox, through the model gateway; openended.mutation.self_improve).
SELF_IMPROVE = "self_improve"
# Tunes a code agent's numeric literals with a small search, each evaluation a child (openended.mutation.tune).
TUNE = "tune"
OperatorName = Literal["gaussian", "noop", "ast", "tune", "llm_diff", "llm_rewrite", "llm_crossover", "self_improve"]
OPERATORS: tuple[str, ...] = get_args(OperatorName)
MODEL_OPERATORS: tuple[str, ...] = (*LLM_OPERATORS, SELF_IMPROVE)  # operators that call a model (one arm per model)
CODE_OPERATORS: tuple[str, ...] = ("ast", "noop", TUNE, *MODEL_OPERATORS)
PARAMS_OPERATORS: tuple[str, ...] = ("gaussian", "noop")
# Operators that make a root agent from nothing: the task's seed, a random genome. (A user's
# folder, operator "given", is stored as it is and never mutated.)
ROOT_OPERATORS: tuple[str, ...] = ("seed", "random")

SandboxKind = Literal["auto", "docker", "process", "inprocess"]
SANDBOX_KINDS: tuple[str, ...] = get_args(SandboxKind)
SandboxMode = Literal["pool", "fresh"]

LOCAL_MODEL = "local-gemma3-270m"
"""The embedded model's name in configs, the store and reports."""

MODEL_SERVER_ENDED = "the embedded model's server ended"
"""How a session's stop reason starts when the embedded model's server ended on its own (a crash)."""

MAX_GENOME_PATH_CHARS = 1_000


def genome_path_problem(name: object) -> str | None:
    """What is wrong with ``name`` as the path of a genome file, or None when it is fine.

    A genome file lives inside its agent's folder, wherever the genome came from (a user's folder,
    a model's answer, an operator, the store): a non-empty relative POSIX path of at most
    :data:`MAX_GENOME_PATH_CHARS` characters, with no ``..``, ``.`` or empty segment, no backslash,
    and no NUL, newline or lone surrogate."""
    if not isinstance(name, str) or not name:
        return f"file name {repr(name)[:80]} is not a non-empty string"
    name = str.__str__(name)  # a plain str: a subclass may redefine what the checks call
    if len(name) > MAX_GENOME_PATH_CHARS:  # before the cache, which then holds short names only
        return f"file name {name[:80]!r}... is {len(name)} characters long, over the {MAX_GENOME_PATH_CHARS} cap"
    # every child of a campaign names the same few files, each checked on its way through the driver, the worker
    # and the store (a maze child's weights.npy 3 times, ~10 us each)
    return _short_path_problem(name)


@lru_cache(maxsize=4096)
def _short_path_problem(name: str) -> str | None:
    shown = repr(name[:80])
    if any(ch in name for ch in "\x00\n\r\\") or any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        return f"file name {name.encode('utf-8', 'backslashreplace')[:80]!r} holds NUL, a newline, a backslash or " \
               "a lone surrogate"
    if name.startswith("/"):
        return f"file name {shown} is an absolute path; a genome file lives inside its agent's folder"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return (f"file name {shown} has a '..', '.' or empty segment; a genome file is a plain relative path "
                "inside its agent's folder")
    return None
