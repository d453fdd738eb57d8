"""LLM mutation operators: diff (SEARCH/REPLACE), full rewrite, and crossover of two parents.

The model is reached through a ``call(prompt) -> completion`` function (any object with a
``.text`` attribute, returned untouched so that tokens and cost can be counted), which keeps these
operators independent of the client. Errors raised by ``call`` itself propagate unchanged.

Every response that does not give a usable, changed child raises :class:`MutationFailed` with a
reason meant for the next prompt (``MutationContext.last_error``): never a silent no-op. An answer
that was cut off (the completion's ``truncated``: ``max_tokens`` reached, or a SEARCH/REPLACE block
still open where it ends) fails with a reason of kind ``truncated`` before anything is parsed.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openended.mutation.normalise import is_docstring
from openended.mutation.prompts import MutationContext, build_prompt, code_of, primed_suffix, prompt_example
from openended.mutation.search_replace import NO_CHANGE, Block, PatchError, apply_blocks, parse_blocks
from openended.names import LLM_OPERATORS, Files

# The kind of a mutation failure whose answer was cut off (by max_tokens, or inside an open block): its
# reason starts with "truncated: ", as an evaluation failure's starts with its kind.
TRUNCATED = "truncated"
REPEATS_EXAMPLE = "the edit only repeats the example edit of the prompt, which changes no behaviour; make a real change"
_FENCE = re.compile(r"^\s*```")


class MutationFailed(Exception):
    """The model's response gave no usable child. ``completion`` is kept so its tokens still count."""

    def __init__(self, reason: str, completion: Any = None, prompt: str | None = None, *, syntax: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.completion = completion
        self.prompt = prompt
        self.syntax = syntax  # the code did not parse


@dataclass(frozen=True)
class LLMChild:
    """A child made by a model: its files, the completion object as returned by ``call``, and the prompt."""

    files: Files
    completion: Any
    prompt: str


def llm_mutate(kind: str, ctx: MutationContext, call: Callable[[str], Any], *,
               templates_dir: str | Path | None = None, max_blocks: int | None = 1) -> LLMChild:
    """Build the prompt for ``kind`` (one of :data:`LLM_OPERATORS`), ask the model, make the child.

    ``max_blocks``: for ``llm_diff``, how many SEARCH/REPLACE blocks of the response are used (the
    built-in template asks for one edit; a base model goes on writing more, often malformed,
    blocks after it); None uses them all, and any malformed one fails the child.

    Raises:
        ValueError: unknown kind or unusable context (e.g. no code file, crossover without parent 2).
        MutationFailed: the response is not a usable child that differs from the parent.
    """
    if kind not in LLM_OPERATORS:
        raise ValueError(f"unknown LLM operator {kind!r}; known: {', '.join(LLM_OPERATORS)}")
    prompt = build_prompt(kind, ctx, templates_dir)
    completion = call(prompt)
    text = getattr(completion, "text", None)
    if not isinstance(text, str):
        raise MutationFailed(f"the model client returned no text ({type(completion).__name__})", completion, prompt)
    if getattr(completion, "truncated", False):
        raise MutationFailed(truncation_reason(completion), completion, prompt)
    try:
        if kind == "llm_diff":
            files = _diff_child(ctx, primed_suffix(prompt) + text, max_blocks)
        else:
            files = _rewrite_child(ctx, primed_suffix(prompt), text)
    except MutationFailed as exc:
        raise MutationFailed(exc.reason, completion, prompt, syntax=exc.syntax) from None
    return LLMChild(files, completion, prompt)


def truncation_reason(completion: Any) -> str:
    """Why a cut-off answer made no child, as the next prompt for the parent shows it."""
    limit = getattr(completion, "max_tokens", None)
    finish = getattr(completion, "finish_reason", None)
    why = f"finish reason {finish}" if finish else "no finish reason, and the whole limit used"
    return (f"{TRUNCATED}: the answer reached its limit of {limit} tokens before its end ({why}); "
            "write a shorter answer")


def _diff_child(ctx: MutationContext, response: str, max_blocks: int | None) -> Files:
    """Apply the response's blocks; a block naming another file of the genome edits that file, one naming
    a file the genome lacks edits the code file, and one naming no genome path at all (``../evil.py``)
    fails the child (:func:`~openended.mutation.search_replace.parse_blocks`)."""
    try:
        blocks = parse_blocks(response, max_blocks)
    except PatchError as exc:
        raise MutationFailed(f"{TRUNCATED}: {exc.reason}" if exc.cut_off else exc.reason) from None
    by_file: dict[str, list] = {}
    for block in blocks:
        target = block.filename if block.filename in ctx.parent_files else ctx.code_file
        by_file.setdefault(target, []).append(block)
    files = dict(ctx.parent_files)
    changed = []
    for name, file_blocks in by_file.items():
        source = code_of(ctx.parent_files, name, "parent")
        try:
            files[name] = apply_blocks(source, file_blocks, name).encode("utf-8")
            changed.append(name)
        except PatchError as exc:
            if exc.reason != NO_CHANGE:
                raise MutationFailed(exc.reason) from None
    if not changed:
        raise MutationFailed(NO_CHANGE)
    for name in changed:
        if name != ctx.code_file and name.endswith(".py"):
            _parse(files[name].decode("utf-8"), f"the edited {name}")
    _check_code(ctx, files[ctx.code_file].decode("utf-8"), "the edited", require_change=ctx.code_file in changed)
    return files


_DEF_LINE = re.compile(r"^(?:async\s+)?def\s", re.MULTILINE)


def _rewrite_child(ctx: MutationContext, primed: str, text: str) -> Files:
    """The code written by the model, re-attached to what the prompt primed, checked and changed."""
    code = _strip_fences(text)
    found = _DEF_LINE.search(primed)
    preamble = primed[: found.start()] if found else ""
    # The model usually continues the primed def; sometimes it starts over with a whole program
    # (its first line at column 0), with or without its own imports.
    fresh = code.lstrip("\n")
    if fresh[:1].strip():
        has_imports = re.search(r"^(?:import|from)\s", fresh, re.MULTILINE)
        candidates = [fresh, preamble + fresh] if has_imports else [preamble + fresh, fresh]
    else:
        candidates = [primed + code]
    errors = []
    for candidate in dict.fromkeys(candidates):  # in order, without repeats
        if not candidate.strip():
            continue
        try:
            source = _check_code(ctx, _trim_tail(candidate, ctx.entry_point), "the new")
        except MutationFailed as exc:
            if not exc.syntax:
                raise  # it parsed: another reading of the same code would not fix it
            errors.append(exc)
            continue
        files = dict(ctx.parent_files)
        files[ctx.code_file] = source.encode("utf-8")
        return files
    if not errors:
        raise MutationFailed(f"the response holds no code for {ctx.code_file}")
    raise errors[0]


def _strip_fences(text: str) -> str:
    """The code up to the first closing fence; a fence the completion opens itself is skipped."""
    lines = text.split("\n")
    if lines and _FENCE.match(lines[0]):
        lines = lines[1:]
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            return "\n".join(lines[:i]) + "\n"
    return "\n".join(lines)


def _trim_tail(code: str, entry_point: str | None) -> str:
    """``code``, or if it does not parse, its longest prefix that parses and still defines the
    entry point, cut before a line at column 0.

    A base model goes on after the function (prose, a half-written second function); cutting at
    a column-0 line drops that tail. A function cut off in its middle still fails to parse, and
    then ``code`` is returned unchanged so that the syntax error is the one reported.
    """
    try:
        ast.parse(code)
        return code
    except SyntaxError:
        pass
    lines = code.split("\n")
    for end in range(len(lines) - 1, 0, -1):
        if lines[end][:1].strip():  # a line starting at column 0
            prefix = "\n".join(lines[:end]).rstrip() + "\n"
            try:
                tree = ast.parse(prefix)
            except SyntaxError:
                continue
            if not entry_point or any(getattr(n, "name", None) == entry_point for n in tree.body):
                return prefix
    return code


def _parse(source: str, what: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        where = f"line {exc.lineno}" + (f" (`{line[:80]}`)" if line else "")
        raise MutationFailed(f"{what} does not parse: {where}: {exc.msg}", syntax=True) from None


def _check_code(ctx: MutationContext, source: str, what: str, *, require_change: bool = True) -> str:
    """``source`` if it parses, defines the entry point and (if required) behaves differently from
    the parent: its syntax tree, docstrings left out, differs."""
    tree = _parse(source, f"{what} {ctx.code_file}")
    if ctx.entry_point:
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if ctx.entry_point not in defined:
            raise MutationFailed(
                f"{what} {ctx.code_file} defines no top-level function {ctx.entry_point!r} "
                f"(functions: {defined or 'none'})"
            )
    if not require_change:
        return source
    child = _behaviour(tree)
    if child == _behaviour_of(ctx.parent_code):
        raise MutationFailed(NO_CHANGE)
    if child == _example_behaviour(ctx):
        raise MutationFailed(REPEATS_EXAMPLE)
    if ctx.parent2_files is not None and ctx.code_file in ctx.parent2_files:
        if child == _behaviour_of(ctx.parent2_files[ctx.code_file].decode("utf-8", "replace")):
            raise MutationFailed("the result is a copy of program B; combine ideas of both programs")
    return source


def _behaviour(tree: ast.Module) -> str:
    """The syntax tree without docstrings and type annotations: equal dumps behave the same."""
    tree = copy.deepcopy(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
        elif isinstance(node, ast.arg):
            node.annotation = None
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            first = body[0]
            if is_docstring(first):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _behaviour_of(source: str) -> str | None:
    try:
        return _behaviour(ast.parse(source))
    except SyntaxError:
        return None


def _example_behaviour(ctx: MutationContext) -> str | None:
    """The behaviour of the parent with the prompt's example edit applied (None if it does not apply)."""
    search, replace = prompt_example(ctx)
    block = Block(1, tuple(search.split("\n")), tuple(replace.split("\n")))
    try:
        return _behaviour_of(apply_blocks(ctx.parent_code, [block]))
    except PatchError:
        return None
