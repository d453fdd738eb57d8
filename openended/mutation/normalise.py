"""Code genomes up to formatting: two children that differ only in layout, comments or docstrings get the
same :func:`genome_key`, and the later one is not evaluated (``openended.engine.dedupe``).

What is set aside, per file:

- a ``.py`` file that parses: everything ``ast.unparse`` does not write back (comments, blank lines,
  spacing, line breaks inside brackets, quote style, redundant parentheses), and every statement that
  is a bare string literal (docstrings and other string statements: they compute nothing). Type
  annotations are kept: a dataclass reads them. A program that reads its own source or ``__doc__``
  could tell two such genomes apart; the evaluators we know of do not;
- any other file that is UTF-8 text, and a ``.py`` file that does not parse: line endings, whitespace at
  the end of a line, and blank lines (indentation is kept: Python and YAML read it);
- anything else (binary files): nothing.

File names are compared as they are. The key depends on the Python version's ``ast.unparse``, so it
is never stored: a campaign recomputes it from the stored genomes when it resumes.
"""

from __future__ import annotations

import ast
import hashlib

from openended.names import Files


def is_docstring(node: ast.stmt) -> bool:
    """Whether ``node`` is a statement that is only a string literal (a docstring, where it comes first)."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def normalise_python(source: str) -> str | None:
    """``source`` as ``ast.unparse`` writes it without its bare string statements; None when it does
    not parse. Idempotent: normalising the result gives it back."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: a null byte
        return None
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [statement for statement in body if not is_docstring(statement)]
            if len(kept) != len(body):
                setattr(node, field, kept or [ast.Pass()])  # a block cannot be empty
    try:
        return ast.unparse(tree)
    except (ValueError, RecursionError):  # a tree ast.unparse cannot write (very deep nesting)
        return None


def normalise_text(text: str) -> str:
    """``text`` with line endings unified, trailing whitespace and blank lines dropped."""
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def normalise_file(name: str, data: bytes) -> bytes:
    """One file's content with what :mod:`this module <openended.mutation.normalise>` sets aside removed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    if name.endswith(".py"):
        code = normalise_python(text)
        if code is not None:
            return code.encode("utf-8")
    return normalise_text(text).encode("utf-8")


def genome_key(files: Files) -> str:
    """A hash of the genome up to formatting: equal for two genomes that differ only in what is set aside."""
    digest = hashlib.sha256(b"openended-normalised-genome-1\0")
    for name in sorted(files):
        content = normalise_file(name, files[name])
        encoded = name.encode("utf-8", "surrogatepass")
        # lengths first: no two different genomes write the same byte stream
        digest.update(len(encoded).to_bytes(8, "big") + encoded + len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()
