"""LLM-free edits of Python source on its syntax tree: the code-genome baseline operator.

Four kinds of edit, each one small and always syntactically valid:

- ``constant``: perturb a numeric literal (``v + scale * |v| * N(0, 1)``; ints stay ints and change by at least 1);
- ``operator``: swap an arithmetic operator among ``+ - * /`` (in expressions and augmented assignments);
- ``comparison``: flip or relax a comparison (``<`` to ``<=`` or ``>``, ``==`` to ``!=``, ...);
- ``swap``: swap two adjacent statements of a block.

Everything is deterministic given the numpy Generator. The child is written with ``ast.unparse``,
so comments and formatting of the parent are not kept (docstrings are).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable
from itertools import pairwise

import numpy as np

from openended.mutation.gaussian import check_scale
from openended.mutation.normalise import is_docstring
from openended.names import Files

EDIT_KINDS = ("constant", "operator", "comparison", "swap")
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div)
# Each comparison may become a relaxed/tightened version of itself or its mirror image.
_COMPARE_TO = {
    ast.Lt: (ast.LtE, ast.Gt),
    ast.LtE: (ast.Lt, ast.GtE),
    ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
}
# Swapping these changes the text but rarely the behaviour: not worth an evaluation.
_UNSWAPPABLE = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _sites(tree: ast.AST) -> list[tuple[str, int]]:
    """Every possible edit as (kind, index within its kind), in a fixed order (ast.walk)."""
    counts = dict.fromkeys(EDIT_KINDS, 0)
    for node in ast.walk(tree):
        if _is_number(node):
            counts["constant"] += 1
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, _ARITH):
            counts["operator"] += 1
        elif isinstance(node, ast.Compare):
            counts["comparison"] += sum(type(op) in _COMPARE_TO for op in node.ops)
        for _, body in _statement_lists(node):
            counts["swap"] += sum(1 for a, b in pairwise(body) if _swappable(a, b))
    return [(kind, i) for kind in EDIT_KINDS for i in range(counts[kind])]


def _statement_lists(node: ast.AST) -> Iterable[tuple[str, list]]:
    for name in ("body", "orelse", "finalbody"):
        value = getattr(node, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            yield name, value


def _swappable(a: ast.stmt, b: ast.stmt) -> bool:
    if isinstance(a, _UNSWAPPABLE) or isinstance(b, _UNSWAPPABLE) or is_docstring(a) or is_docstring(b):
        return False
    return ast.dump(a) != ast.dump(b)


def _perturb(value: int | float, rng: np.random.Generator, scale: float) -> int | float:
    step = scale * (abs(value) if value != 0 else 1.0) * rng.standard_normal()
    if isinstance(value, int):
        new = int(round(value + step))
        return new if new != value else value + int(rng.choice((-1, 1)))
    new = float(f"{value + step:.4g}")  # 4 significant digits: readable for the next prompt
    return new if math.isfinite(new) else value


def _signed(value: int | float) -> ast.expr:
    # A negative literal is written as unary minus so that unparse keeps precedence: (-2) ** x.
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


class _ReplaceNode(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST):
        self.target, self.replacement = target, replacement

    def visit(self, node):
        if node is self.target:
            return self.replacement
        return self.generic_visit(node)


def _apply(tree: ast.Module, kind: str, index: int, rng: np.random.Generator, scale: float) -> ast.Module:
    """Apply the ``index``-th edit of ``kind`` to ``tree`` (in place where possible); returns the tree."""
    seen = 0
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if kind == "constant" and _is_number(node):
            if seen == index:
                parent = parents.get(node)
                negated = isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub)
                target = parent if negated else node
                value = -node.value if negated else node.value
                return _ReplaceNode(target, _signed(_perturb(value, rng, scale))).visit(tree)
            seen += 1
        elif kind == "operator" and isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, _ARITH):
            if seen == index:
                others = [op for op in _ARITH if not isinstance(node.op, op)]
                node.op = others[int(rng.integers(len(others)))]()
                return tree
            seen += 1
        elif kind == "comparison" and isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                if type(op) not in _COMPARE_TO:
                    continue
                if seen == index:
                    choices = _COMPARE_TO[type(op)]
                    node.ops[j] = choices[int(rng.integers(len(choices)))]()
                    return tree
                seen += 1
        elif kind == "swap":
            for _, body in _statement_lists(node):
                for j in range(len(body) - 1):
                    if not _swappable(body[j], body[j + 1]):
                        continue
                    if seen == index:
                        body[j], body[j + 1] = body[j + 1], body[j]
                        return tree
                    seen += 1
    raise AssertionError(f"no {kind} edit number {index}")  # _sites and _apply disagree: a bug


def check_edit_params(*, scale: object, edits: object, kinds: object) -> tuple[str, ...]:
    """The edit kinds as a tuple; ValueError saying which parameter is out of range and what it got."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds) if isinstance(kinds, (list, tuple)) else (kinds,)
    unknown = sorted(set(map(str, kinds)) - set(EDIT_KINDS))
    if unknown or not kinds or not all(isinstance(k, str) for k in kinds):
        raise ValueError(f"AST edit kinds must be a non-empty subset of {list(EDIT_KINDS)}, got {list(kinds)}")
    if isinstance(edits, bool) or not (isinstance(edits, int) and edits >= 1):
        raise ValueError(f"edits must be an integer >= 1, got {edits!r}")
    check_scale("scale", scale)
    return kinds


def edit_source(source: str, rng: np.random.Generator, *, scale: float = 0.2, edits: int = 1,
                kinds: Iterable[str] = EDIT_KINDS, filename: str = "<code>") -> str:
    """``source`` after ``edits`` random AST edits, as ``ast.unparse`` text.

    Each edit picks a kind uniformly among ``kinds`` that still have a site, then a site uniformly;
    an edit that leaves the tree unchanged is discarded and another site is tried.

    Raises:
        ValueError: the source does not parse, a parameter is out of range, or no edit can change it.
    """
    kinds = check_edit_params(scale=scale, edits=edits, kinds=kinds)
    try:
        parent = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ValueError(f"{filename} does not parse (line {exc.lineno}: {exc.msg}); no AST edit possible") from None
    parent_dump = ast.dump(parent)
    current = source
    for _ in range(edits):
        candidates = [s for s in _sites(ast.parse(current)) if s[0] in kinds]
        while True:
            live = [k for k in kinds if any(s[0] == k for s in candidates)]
            if not live:
                raise ValueError(
                    f"no AST edit possible in {filename}: no {', '.join(kinds)} edit changes it "
                    "(needs numeric constants, + - * / operators, comparisons or adjacent statements)"
                )
            kind = live[int(rng.integers(len(live)))]
            of_kind = [s for s in candidates if s[0] == kind]
            site = of_kind[int(rng.integers(len(of_kind)))]
            tree = _apply(ast.parse(current), site[0], site[1], rng, scale)
            text = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
            dump = ast.dump(ast.parse(text))  # re-parse: the child must be valid Python
            if dump != parent_dump and dump != ast.dump(ast.parse(current)):
                current = text
                break
            candidates.remove(site)
    return current


def ast_mutate(parent_files: Files, rng: np.random.Generator, *, code_file: str, params: dict) -> Files:
    """Child files: ``parent_files`` with ``code_file`` edited by :func:`edit_source`.

    ``params``: ``scale`` (relative size of constant perturbations, default 0.2), ``edits``
    (edits per child, default 1), ``kinds`` (allowed edit kinds, default all).

    Raises:
        ValueError: naming the file when it is missing, not UTF-8, unparsable, or allows no edit.
    """
    if code_file not in parent_files:
        raise ValueError(f"code file {code_file!r} missing from the parent (files: {sorted(parent_files) or 'none'})")
    try:
        source = parent_files[code_file].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{code_file} is not UTF-8 text: {exc}") from None
    child = edit_source(
        source,
        rng,
        scale=float(params.get("scale", 0.2)),
        edits=int(params.get("edits", 1)),
        kinds=params.get("kinds", EDIT_KINDS),
        filename=code_file,
    )
    out = dict(parent_files)
    out[code_file] = child.encode("utf-8")
    return out
