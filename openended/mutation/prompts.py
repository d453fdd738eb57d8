"""Prompts for the LLM mutation operators, built from template files.

A template is a text file with ``string.Template`` placeholders (``$parent_code``; ``$$`` for a
literal dollar sign, so code braces need no escaping). The built-ins live in ``templates/``
(``diff.txt``, ``rewrite.txt``, ``crossover.txt``); a campaign's ``templates_dir`` overrides any of
them by file name. Placeholders (all strings, empty when the context has nothing for them):

- ``task_prompt``: the task's prompt.md; ``code_file``, ``entry_point``;
- ``parent_code``, ``parent_fitness``, ``parent_feedback``, ``parent_metrics``;
- ``parent2_code``, ``parent2_fitness``, ``parent2_feedback`` (crossover);
- ``inspirations``: a few other archive members, each with its fitness and code;
- ``last_error``: why the previous LLM child of this parent failed, as one line, or nothing;
- ``primed_code``: the parent's code up to the body of the entry point (``def`` line and
  docstring), for templates that end inside a code block so that a base model writes the body next;
- ``example_search`` / ``example_replace``: a SEARCH/REPLACE example on the parent's own code (its
  ``return`` line rewritten through a variable; in a focused diff on a table row, another row with a
  number changed), so a small model sees the format on real lines;
- ``focus``: in a focused diff, the text the model is asked to rewrite and the divider after it.

The embedded model is a 270M *base* model with a 2048-token context: templates frame the prompt
as a document to continue, and every part is truncated to fit ``max_chars``.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from openended.mutation.normalise import is_docstring
from openended.names import Files

TEMPLATES_DIR = Path(__file__).parent / "templates"
KINDS = ("diff", "rewrite", "crossover")
PLACEHOLDERS = (
    "task_prompt", "code_file", "entry_point", "parent_code", "parent_fitness", "parent_feedback",
    "parent_metrics", "parent2_code", "parent2_fitness", "parent2_feedback", "inspirations", "last_error",
    "primed_code", "example_search", "example_replace", "focus",
)
# The example edit of a focused diff whose focus is the parent's own example line.
FOCUSED_EXAMPLE = ("    waste = capacity - size", "    waste = (capacity - size) ** 2")
# Character budgets: about 3.5 characters per token for code, so the default whole-prompt budget
# leaves room for a 150-token answer in a 2048-token context.
MAX_PROMPT_CHARS = 5_600
MAX_TASK_PROMPT_CHARS = 1_800
MAX_FEEDBACK_CHARS = 300
MAX_METRICS_CHARS = 200
MAX_ERROR_CHARS = 300
MAX_INSPIRATION_CODE_CHARS = 700
MAX_INSPIRATIONS = 2
_FENCE = re.compile(r"^\s*```")
_SEARCH_LINE = re.compile(r"^\s*<{3,}\s*SEARCH\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Inspiration:
    """Another archive member shown as an example: its files, fitness and evaluation feedback."""

    files: Files
    fitness: float | None = None
    feedback: str = ""


@dataclass
class MutationContext:
    """Everything a prompt is built from. ``inspirations`` items are :class:`Inspiration` or
    ``(files, fitness, feedback)`` tuples."""

    task_prompt: str
    code_file: str
    parent_files: Files
    entry_point: str | None = None
    parent_fitness: float | None = None
    parent_feedback: str = ""
    parent_metrics: dict = field(default_factory=dict)
    inspirations: list = field(default_factory=list)
    parent2_files: Files | None = None
    parent2_fitness: float | None = None
    parent2_feedback: str = ""
    last_error: str | None = None
    # diff: lines of the parent chosen as the SEARCH text, so the model writes only their REPLACE
    # (a small base model copies a SEARCH line reliably but rarely goes on to write "=======")
    focus: str | None = None
    # self_improve: the end of the parent's recent model calls (its gateway transcripts), for the diagnosis
    parent_transcript: str = ""

    @classmethod
    def for_task(cls, task, parent_files: Files, **fields) -> MutationContext:
        """A context for ``task`` (an openended.tasks.Task): its prompt.md, code_file and entry_point."""
        if task.spec.genome != "code":
            raise ValueError(f"task {task.name!r} has a {task.spec.genome} genome; LLM operators need a code genome")
        return cls(task_prompt=task.prompt(), code_file=task.spec.code_file, parent_files=parent_files,
                   entry_point=task.spec.entry_point, **fields)

    @property
    def parent_code(self) -> str:
        return code_of(self.parent_files, self.code_file, "parent")


def code_of(files: Files, code_file: str, who: str = "agent") -> str:
    """The text of ``code_file`` in ``files``; ValueError naming the file when missing or not UTF-8."""
    if code_file not in files:
        raise ValueError(f"{who} has no {code_file} (files: {sorted(files) or 'none'})")
    try:
        return files[code_file].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{who}'s {code_file} is not UTF-8 text: {exc}") from None


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a line end, marked with ``...`` when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    if limit <= 4:
        return ""
    cut = text[: limit - 4]
    if "\n" in cut:
        cut = cut[: cut.rindex("\n")]
    return cut.rstrip() + "\n..."


def _fitness(value: float | None) -> str:
    if value is None:
        return "not evaluated"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _metrics(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # lists and texts are noise for a small model
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return truncate(", ".join(parts), MAX_METRICS_CHARS)


def _entry_def(code: str, entry_point: str | None) -> ast.FunctionDef | None:
    if not entry_point:
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return node
    return None


def primed_code(code: str, entry_point: str | None) -> str:
    """``code`` up to the body of ``entry_point``: its ``def`` line(s) and docstring; "" if it has none.

    The docstring is primed too: a small model otherwise spends its tokens rambling in a new one.
    """
    node = _entry_def(code, entry_point)
    if node is None or node.body[0].lineno <= node.lineno:
        return ""  # no entry point, or a one-line def: nothing safe to prime with
    first = node.body[0]
    if is_docstring(first) and len(node.body) > 1:
        end = first.end_lineno  # keep the docstring, stop before the first statement after it
    else:
        end = first.lineno - 1
    lines = code.splitlines()[:end]
    while lines and (not lines[-1].strip() or lines[-1].strip().startswith("#")):
        lines.pop()  # comments before the first statement stay out of the primed text
    return "\n".join(lines) + "\n"


def example_edit(code: str, entry_point: str | None) -> tuple[str, str]:
    """A SEARCH/REPLACE example on the parent's own code: its last one-line ``return``, rewritten
    through a variable. The format is shown on real lines, and a model that copies the example
    gets a child that behaves like its parent, which llm_ops rejects with a reason."""
    node = _entry_def(code, entry_point)
    returns = [n for n in ast.walk(node)] if node is not None else []
    returns = [n for n in returns if isinstance(n, ast.Return) and n.value is not None and n.lineno == n.end_lineno]
    if not returns:
        return "    return x", "    return x * 2"
    line = code.splitlines()[returns[-1].lineno - 1]
    indent = line[: len(line) - len(line.lstrip())]
    return line, f"{indent}result = {ast.unparse(returns[-1].value)}\n{indent}return result"


def _table_rows(node: ast.stmt, lines: list[str]) -> list[ast.expr]:
    """The rows of a module-level data table written one per line (``ROWS = [\n (..),\n (..),\n]``): each
    holds a number and has its lines to itself (nothing after it but a comma or a comment)."""
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
        rows = list(value.elts)
    elif isinstance(value, ast.Dict):
        rows = [v for k, v in zip(value.keys, value.values, strict=True) if k is not None]  # not a **spread
    else:
        return []
    spans = [(r.lineno, r.end_lineno or r.lineno) for r in rows]
    if not rows or spans[0][0] <= node.lineno or any(a[1] >= b[0] for a, b in itertools.pairwise(spans)):
        return []  # a row sharing a line with another, or with the assignment, is not a line of its own
    for row in rows:
        after = lines[(row.end_lineno or row.lineno) - 1][row.end_col_offset or 0:].strip().removeprefix(",").strip()
        if after and not after.startswith("#"):
            return []  # e.g. the last row's closing bracket on its line: a rewrite of the row would drop it
    return [r for r in rows if any(isinstance(n, ast.Constant) and isinstance(n.value, (int, float))
                                   and not isinstance(n.value, bool) for n in ast.walk(r))]


def _candidates(code: str, entry_point: str | None) -> list[tuple[str, int | None]]:
    """(text, the line of the table it is a row of, or None for a statement), in the order of
    :func:`focus_candidates`."""
    node = _entry_def(code, entry_point)
    if node is None:
        return []
    lines = code.replace("\r\n", "\n").split("\n")
    tree = ast.parse(code)
    functions = [node] + [n for n in tree.body
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not node]
    spans: list[tuple[int, int, int | None]] = [
        (s.lineno, s.end_lineno or s.lineno, None) for f in functions for s in f.body
        if not is_docstring(s) and s.lineno > f.lineno]  # a one-line def's body is not a line of its own
    for stmt in tree.body:
        spans += [(r.lineno, r.end_lineno or r.lineno, stmt.lineno) for r in _table_rows(stmt, lines)]
    found: dict[str, int | None] = {}
    for a, b, table in spans:
        text = "\n".join(lines[a - 1: b])
        if text not in found and _occurrences(lines, text.split("\n")) == 1:
            found[text] = table
    return list(found.items())


def focus_candidates(code: str, entry_point: str | None) -> list[str]:
    """What a focused diff may ask the model to rewrite: each statement of ``entry_point``'s body, of the
    module's other functions, and each row of a module-level data table (docstrings left out). Only text
    that occurs once in ``code`` (a SEARCH text must be unambiguous); [] without the entry point."""
    return [text for text, _ in _candidates(code, entry_point)]


def _occurrences(lines: list[str], part: list[str]) -> int:
    return sum(lines[i: i + len(part)] == part for i in range(len(lines) - len(part) + 1))


def choose_focus(code: str, entry_point: str | None, rng) -> str | None:
    """One of :func:`focus_candidates`, drawn with ``rng``, as the SEARCH text of a focused diff;
    None when there is none."""
    candidates = focus_candidates(code, entry_point)
    if not candidates:
        return None
    return candidates[int(rng.integers(len(candidates)))]


def primed_suffix(prompt: str) -> str:
    """What the prompt started that the completion continues: an open SEARCH block (its marker line,
    and its SEARCH text and divider when the prompt gave them), or the code after an unclosed code
    fence; "" if the prompt ends with neither."""
    lines = prompt.split("\n")
    content = [i for i, line in enumerate(lines) if line.strip()]
    if content and _SEARCH_LINE.match(lines[content[-1]]):
        return "\n".join(lines[content[-1]:])
    if content and lines[content[-1]].strip() == "=======":
        opened = [i for i in content if _SEARCH_LINE.match(lines[i])]
        if opened and not any(">>>>" in lines[i] for i in content if i > opened[-1]):
            return "\n".join(lines[opened[-1]:])
    fences = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    if len(fences) % 2 == 1:  # an odd number of fences: the last one is still open
        return "\n".join(lines[fences[-1] + 1:])
    return ""


def _inspirations(items: list, code_file: str, limit: int) -> str:
    parts = []
    for n, item in enumerate(items[:limit], 1):
        insp = item if isinstance(item, Inspiration) else Inspiration(*item)
        try:
            code = code_of(insp.files, code_file, f"inspiration {n}")
        except ValueError:
            continue  # an inspiration is optional context: skip one without readable code
        feedback = truncate(insp.feedback, MAX_FEEDBACK_CHARS // 2)
        parts.append(
            f"# Another program (fitness {_fitness(insp.fitness)})"
            + (f": {feedback}" if feedback else "")
            + f"\n```python\n{truncate(code, MAX_INSPIRATION_CODE_CHARS)}\n```"
        )
    return "\n\n".join(parts)


def _kind(kind: str) -> str:
    name = kind.removeprefix("llm_")
    if name not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; known: {', '.join(KINDS)} (or llm_{'/llm_'.join(KINDS)})")
    return name


def template_path(kind: str, templates_dir: str | Path | None = None) -> Path:
    """The template file for ``kind``: ``templates_dir/<kind>.txt`` if it exists, else the built-in."""
    name = f"{_kind(kind)}.txt"
    if templates_dir is not None:
        folder = Path(templates_dir)
        if not folder.is_dir():
            raise ValueError(f"templates_dir {folder} is not a folder")
        if (folder / name).is_file():
            return folder / name
    return TEMPLATES_DIR / name


_NUMBER = re.compile(r"(?<![\w.])(?<![eE][+-])(\d+\.\d*|\d+)(?![\w.])")


def _number_edit(text: str) -> str | None:
    """``text`` with its first number literal changed (an int by one, a float doubled); None without one."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    number = match.group(1)
    new = str(int(number) + 1) if number.isdigit() else repr(float(number) * 2 or 0.5)
    return text[: match.start()] + new + text[match.end():]


def prompt_example(ctx: MutationContext) -> tuple[str, str]:
    """The example edit a diff prompt shows: :func:`example_edit`; in a focused diff on a row of a table,
    another row of that table (the one most like the focus) with a number changed, so the example shows an
    edit of the kind asked for without being the answer; else :data:`FOCUSED_EXAMPLE` when the example
    would edit the focus itself."""
    code = ctx.parent_code
    search, replace = example_edit(code, ctx.entry_point)
    if not ctx.focus:
        return search, replace
    candidates = _candidates(code, ctx.entry_point)
    table = dict(candidates).get(ctx.focus)
    siblings = [text for text, t in candidates if table is not None and t == table and text != ctx.focus
                and _number_edit(text) not in (None, text)]
    if siblings:
        # Ties go to the earlier row: the choice is a function of the parent and the focus alone.
        nearest = max(siblings, key=lambda c: difflib.SequenceMatcher(None, c, ctx.focus).ratio())
        return nearest, _number_edit(nearest) or nearest
    if ctx.focus.strip() == search.strip():
        return FOCUSED_EXAMPLE  # the example would edit the very line the model is asked to edit
    return search, replace


def _values(ctx: MutationContext, task_chars: int, n_inspirations: int) -> dict[str, str]:
    code = ctx.parent_code
    search, replace = prompt_example(ctx)
    last_error = ""
    if ctx.last_error:
        last_error = ("The previous attempt to change this program failed: "
                      f"{truncate(ctx.last_error, MAX_ERROR_CHARS)}\nDo not repeat that mistake.")
    values = {
        "task_prompt": truncate(ctx.task_prompt, task_chars),
        "code_file": ctx.code_file,
        "entry_point": ctx.entry_point or "",
        "parent_code": code.strip("\n"),
        "parent_fitness": _fitness(ctx.parent_fitness),
        "parent_feedback": truncate(ctx.parent_feedback, MAX_FEEDBACK_CHARS) or "none",
        "parent_metrics": _metrics(ctx.parent_metrics),
        "parent2_code": "",
        "parent2_fitness": _fitness(ctx.parent2_fitness),
        "parent2_feedback": truncate(ctx.parent2_feedback, MAX_FEEDBACK_CHARS) or "none",
        "inspirations": _inspirations(ctx.inspirations, ctx.code_file, n_inspirations),
        "last_error": last_error,
        "primed_code": primed_code(code, ctx.entry_point),
        "example_search": search,
        "example_replace": replace,
        "focus": f"{ctx.focus}\n=======" if ctx.focus else "",
    }
    if ctx.parent2_files is not None:
        values["parent2_code"] = code_of(ctx.parent2_files, ctx.code_file, "second parent").strip("\n")
    return values


_LONE_PLACEHOLDER = re.compile(r"^\$\{?(\w+)\}?$")


def _render(template: str, values: dict[str, str], path: Path) -> str:
    # The file's final newline is the editor's, not the prompt's: a template may end mid-line
    # (the model continues right there); end the file with an empty line to end on a newline.
    template = template[:-1] if template.endswith("\n") else template
    # A line holding only an empty optional section (no inspirations, no last error) goes, and so
    # does the blank line it leaves; the substituted values (code) are never touched.
    lines = [line for line in template.split("\n")
             if not ((m := _LONE_PLACEHOLDER.match(line.strip())) and values.get(m.group(1), "x") == "")]
    template = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    try:
        text = string.Template(template).substitute(values)
    except KeyError as exc:
        raise ValueError(f"template {path}: unknown placeholder ${exc.args[0]}; known: "
                         f"{', '.join('$' + p for p in PLACEHOLDERS)}") from None
    except ValueError as exc:  # a lone "$": string.Template says where
        raise ValueError(f"template {path}: {exc} (write $$ for a literal dollar sign)") from None
    return text


def build_prompt(kind: str, ctx: MutationContext, templates_dir: str | Path | None = None, *,
                 max_chars: int = MAX_PROMPT_CHARS) -> str:
    """The prompt for ``kind`` ("diff", "rewrite", "crossover", or with the ``llm_`` prefix).

    Parts are truncated to their budgets; if the prompt is still over ``max_chars``, inspirations
    are dropped one by one and then the task prompt is shortened (the parents' code never is).

    Raises:
        ValueError: unknown kind, bad templates_dir or template, missing code file, or a crossover
            without ``parent2_files``.
    """
    name = _kind(kind)
    if name == "crossover" and ctx.parent2_files is None:
        raise ValueError("a crossover prompt needs parent2_files (the second parent)")
    path = template_path(name, templates_dir)
    template = path.read_text()
    task_chars = MAX_TASK_PROMPT_CHARS
    n_insp = MAX_INSPIRATIONS
    while True:
        prompt = _render(template, _values(ctx, task_chars, n_insp), path)
        if len(prompt) <= max_chars or (n_insp == 0 and task_chars == 0):
            return prompt
        if n_insp > 0:
            n_insp -= 1
        else:
            task_chars = max(0, task_chars - (len(prompt) - max_chars) - 50)
