"""Prompt building: contents, completion-style endings, template overrides, truncation, last_error."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openended.mutation.prompts import (
    MAX_FEEDBACK_CHARS,
    MAX_INSPIRATION_CODE_CHARS,
    TEMPLATES_DIR,
    Inspiration,
    MutationContext,
    build_prompt,
    primed_code,
    primed_suffix,
    template_path,
    truncate,
)
from openended.tasks import load_task

PARENT = '''import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit."""
    gap = bins - item
    return -gap
'''
OTHER = "import numpy as np\n\n\ndef priority(item, bins):\n    return -np.arange(len(bins))\n"


def ctx(**fields) -> MutationContext:
    base = dict(task_prompt="# Bin packing\nPack items into few bins.", code_file="priority.py",
                parent_files={"priority.py": PARENT.encode()}, entry_point="priority",
                parent_fitness=-4.5649, parent_feedback="2108 bins vs bound 2016",
                parent_metrics={"bins": 2108, "mean_fill": 0.95512, "per_instance": [1, 2], "ok": True})
    base.update(fields)
    return MutationContext(**base)


def test_diff_prompt_holds_the_parts_and_ends_inside_an_open_block():
    prompt = build_prompt("diff", ctx())
    assert prompt.startswith("# Bin packing\nPack items into few bins.")
    assert PARENT.strip() in prompt and "fitness -4.565" in prompt and "2108 bins vs bound 2016" in prompt
    assert "bins=2108, mean_fill=0.9551" in prompt and "per_instance" not in prompt and "ok=" not in prompt
    # a worked example on the parent's own return line, then the opened block
    assert "<<<<<<< SEARCH\n    return -gap\n=======\n    result = -gap\n    return result\n>>>>>>> REPLACE" in prompt
    assert prompt.endswith("\n<<<<<<< SEARCH\n")
    assert primed_suffix(prompt) == "<<<<<<< SEARCH\n"
    # empty sections (no inspirations, no last error) leave no gaps; the code keeps its own blank lines
    assert "\n\n\n" not in prompt.replace(PARENT.strip(), "CODE") and "import numpy as np\n\n\ndef" in prompt


def test_rewrite_prompt_ends_with_the_start_of_the_function():
    prompt = build_prompt("llm_rewrite", ctx())
    head = 'import numpy as np\n\n\ndef priority(item: float, bins: np.ndarray) -> np.ndarray:\n    """Best fit."""\n'
    assert prompt.endswith("```python\n" + head)
    assert primed_suffix(prompt) == head


def test_crossover_prompt_holds_both_parents():
    prompt = build_prompt("crossover", ctx(parent2_files={"priority.py": OTHER.encode()}, parent2_fitness=-5.16,
                                           parent2_feedback="first fit"))
    assert PARENT.strip() in prompt and OTHER.strip() in prompt
    assert "fitness -4.565" in prompt and "fitness -5.16" in prompt and "first fit" in prompt
    assert prompt.index(PARENT.strip()) < prompt.index(OTHER.strip())
    with pytest.raises(ValueError, match="crossover prompt needs parent2_files"):
        build_prompt("crossover", ctx())


def test_last_error_is_shown_only_when_set():
    reason = "block 1: SEARCH text not found in priority.py; nearest lines 7-7 are:\n    return -gap"
    for kind in ("diff", "rewrite"):
        assert reason in build_prompt(kind, ctx(last_error=reason))
        assert "previous attempt" not in build_prompt(kind, ctx())
    crossover = ctx(parent2_files={"priority.py": OTHER.encode()}, last_error="the edit changed nothing")
    assert "failed: the edit changed nothing" in build_prompt("crossover", crossover)


def test_inspirations_a_few_and_truncated():
    long_code = "import numpy as np\n" + "".join(f"x{i} = {i}\n" for i in range(300))
    inspirations = [
        Inspiration({"priority.py": OTHER.encode()}, -5.16, "first fit"),
        ({"priority.py": long_code.encode()}, -7.0, "long one " * 100),
        ({"priority.py": b"third = 3\n"}, -9.0, "never shown"),
    ]
    prompt = build_prompt("diff", ctx(inspirations=inspirations))
    assert OTHER.strip() in prompt and "fitness -5.16): first fit" in prompt
    assert "x0 = 0" in prompt and "x299 = 299" not in prompt and "third = 3" not in prompt
    shown = prompt[prompt.index("x0 = 0"):]
    assert len(shown[: shown.index("```")]) <= MAX_INSPIRATION_CODE_CHARS
    assert prompt.count("long one") < 100
    # an inspiration without the code file is skipped, not an error
    assert "Another program" not in build_prompt("diff", ctx(inspirations=[({"other.txt": b"x"}, 1.0, "")]))


def test_long_feedback_and_error_are_truncated():
    prompt = build_prompt("diff", ctx(parent_feedback="line\n" * 1000, last_error="why " * 1000))
    feedback = prompt[prompt.index("Evaluation: "):prompt.index("Metrics:")]
    assert len(feedback) <= len("Evaluation: ") + MAX_FEEDBACK_CHARS + 1 and feedback.rstrip().endswith("...")
    assert prompt.count("why") < 100


def test_prompt_budget_drops_inspirations_then_shortens_the_task_prompt():
    inspirations = [({"priority.py": OTHER.encode()}, -5.0, "")] * 2
    task_prompt = "\n".join(f"Rule {i}: something about packing." for i in range(200))
    full = build_prompt("rewrite", ctx(task_prompt=task_prompt, inspirations=inspirations), max_chars=100_000)
    assert full.count("Another program") == 2
    small = build_prompt("rewrite", ctx(task_prompt=task_prompt, inspirations=inspirations), max_chars=1500)
    assert len(small) <= 1500 and "Another program" not in small
    assert PARENT.strip() in small and "Rule 0:" in small and "Rule 199" not in small
    # the parent's code is never cut, even when over budget
    assert PARENT.strip() in build_prompt("rewrite", ctx(task_prompt=task_prompt), max_chars=10)


def test_templates_dir_overrides_by_file_name(tmp_path):
    (tmp_path / "diff.txt").write_text(
        "Make $code_file better (now $parent_fitness; costs $$5).\n$parent_code\n<<<<<<< SEARCH\n\n")
    prompt = build_prompt("diff", ctx(), templates_dir=tmp_path)
    assert prompt == f"Make priority.py better (now -4.565; costs $5).\n{PARENT.strip()}\n<<<<<<< SEARCH\n"
    assert template_path("rewrite", tmp_path) == TEMPLATES_DIR / "rewrite.txt"  # not overridden: built-in
    assert build_prompt("rewrite", ctx(), templates_dir=tmp_path) == build_prompt("rewrite", ctx())


def test_template_errors_name_the_file(tmp_path):
    (tmp_path / "diff.txt").write_text("Hello $parent_kode\n")
    with pytest.raises(ValueError, match=r"diff\.txt: unknown placeholder \$parent_kode; known: \$task_prompt"):
        build_prompt("diff", ctx(), templates_dir=tmp_path)
    (tmp_path / "rewrite.txt").write_text("costs $5\n")
    with pytest.raises(ValueError, match=r"rewrite\.txt: .*write \$\$ for a literal dollar sign"):
        build_prompt("rewrite", ctx(), templates_dir=tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        build_prompt("diff", ctx(), templates_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown prompt kind 'mutate'"):
        build_prompt("mutate", ctx())


def test_missing_code_file_is_named():
    with pytest.raises(ValueError, match=r"parent has no priority\.py \(files: \['main\.py'\]\)"):
        build_prompt("diff", ctx(parent_files={"main.py": b""}))


def test_primed_code():
    assert primed_code(PARENT, "priority").endswith('-> np.ndarray:\n    """Best fit."""\n')
    no_doc = "import numpy as np\n\ndef priority(item, bins):\n    # comment\n    return bins\n"
    assert primed_code(no_doc, "priority") == "import numpy as np\n\ndef priority(item, bins):\n"
    assert primed_code("def priority(item, bins): return bins\n", "priority") == ""
    assert primed_code("def other():\n    pass\n", "priority") == ""
    assert primed_code("def priority(:\n", "priority") == ""
    assert primed_suffix("no code here") == "" and primed_suffix("```python\nx = 1\n```\n") == ""


def test_context_for_a_task():
    task = load_task("binpack")
    context = MutationContext.for_task(task, task.seed_files(), parent_fitness=-4.56)
    assert context.code_file == "priority.py" and context.entry_point == "priority"
    prompt = build_prompt("diff", context)
    assert task.prompt().strip()[:200] in prompt and "def priority(item: float, bins: np.ndarray)" in prompt


@given(text=st.text(), limit=st.integers(4, 500))
def test_property_truncate_fits_and_keeps_a_prefix(text, limit):
    out = truncate(text, limit)
    assert len(out) <= limit
    if len(text.strip()) <= limit:
        assert out == text.strip()
    else:  # cut: a prefix of the text marked with "...", or nothing when there is no room for the mark
        assert out == "" or (out.endswith("\n...") and text.strip().startswith(out[:-4]))


def test_focused_diff_primes_the_search_text_and_takes_a_replacement_only_answer():
    import numpy as np

    from openended.mutation.llm_ops import llm_mutate
    from openended.mutation.prompts import FOCUSED_EXAMPLE, choose_focus, primed_suffix
    from openended.tasks import load_task

    task = load_task("binpack")
    ctx = MutationContext.for_task(task, task.seed_files(), parent_fitness=-4.5)
    ctx.focus = choose_focus(ctx.parent_code, ctx.entry_point, np.random.default_rng(1))
    assert ctx.focus == "    return -(bins - item)"  # best fit's only statement (the docstring is skipped)
    prompt = build_prompt("llm_diff", ctx)
    assert prompt.endswith("<<<<<<< SEARCH\n    return -(bins - item)\n=======\n")
    assert primed_suffix(prompt) == "<<<<<<< SEARCH\n    return -(bins - item)\n=======\n"
    # The example edits another line than the one asked for, so copying it is no answer.
    assert FOCUSED_EXAMPLE[1] in prompt

    class Answer:
        text = "    return -(bins - item) ** 2\n>>>>>>> REPLACE"

    child = llm_mutate("llm_diff", ctx, lambda p: Answer())
    assert "return -(bins - item) ** 2" in child.files["priority.py"].decode()
    assert "return -(bins - item)\n" not in child.files["priority.py"].decode().split('"""')[-1]


def test_focus_candidates_include_the_rows_of_a_module_table_and_the_helpers_statements():
    from openended.mutation.prompts import focus_candidates

    task = load_task("circle-packing")
    code = task.seed_files()["packing.py"].decode()
    candidates = focus_candidates(code, task.spec.entry_point)
    rows = [c for c in candidates if c.strip().startswith("(")]
    assert rows == [line for line in code.splitlines() if line.startswith("    (") and line.endswith("),")]
    assert len(rows) == 5
    assert "    xy = centres(n)" in candidates  # the entry point's own statements
    assert "    return r * (1 - 1e-12)" in candidates  # a helper's
    assert not any('"""' in c for c in candidates)  # docstrings are never the text to rewrite
    assert focus_candidates(code, "no_such_function") == []


ROW = st.tuples(st.integers(0, 9), st.integers(0, 9)).map(lambda t: f"    ({t[0]}, {t[1]}),")


@given(rows=st.lists(ROW, min_size=1, max_size=8), one_line=st.booleans())
def test_property_every_focus_candidate_is_one_unambiguous_search_text(rows, one_line):
    import numpy as np

    from openended.mutation.prompts import choose_focus, focus_candidates
    from openended.mutation.search_replace import Block, apply_block

    inline = f"T = [{', '.join(r.strip().rstrip(',') for r in rows)}]"
    table = inline if one_line else "T = [\n" + "\n".join(rows) + "\n]"
    code = f"{table}\n\n\ndef f(n):\n    \"\"\"Doc.\"\"\"\n    return T[:n]\n"
    candidates = focus_candidates(code, "f")
    # A row written twice is ambiguous as a SEARCH text, and a one-line table has no rows of its own.
    expected_rows = [] if one_line else [r for r in dict.fromkeys(rows) if rows.count(r) == 1]
    assert candidates == ["    return T[:n]"] + expected_rows
    for text in candidates:  # each applies in exactly one place: replacing it by itself changes nothing
        lines = tuple(text.split("\n"))
        assert apply_block(code, Block(1, lines, lines)) == code
    assert choose_focus(code, "f", np.random.default_rng(0)) in candidates


def test_a_focused_diff_on_a_table_row_shows_another_row_with_a_number_changed():
    from openended.mutation.prompts import focus_candidates, prompt_example

    task = load_task("circle-packing")
    ctx = MutationContext.for_task(task, task.seed_files(), parent_fitness=2.1667)
    rows = [c for c in focus_candidates(ctx.parent_code, "pack") if c.strip().startswith("(")]
    for focus in rows:
        ctx.focus = focus
        search, replace = prompt_example(ctx)
        assert search in rows and search != focus  # a sibling row, never the text the model must rewrite
        assert replace != search and replace.count(",") == search.count(",")  # one number changed, same shape
        prompt = build_prompt("llm_diff", ctx)
        assert f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE" in prompt
        assert prompt.endswith(f"<<<<<<< SEARCH\n{focus}\n=======\n")
    ctx.focus = None  # unfocused: the example rewrites the entry point's return through a variable
    assert prompt_example(ctx)[1].strip().startswith("result = ")


@pytest.mark.parametrize("table, rows", [
    ("T = [\n    (1, 2),\n    (3, 4)]", []),                       # the last row shares its line with the bracket
    ("T = {\n    'a': (1, 2),\n    **E,\n}", ["    'a': (1, 2),"]),  # a spread is not a row
    ("__all__ = [\n    'f',\n    'g',\n]", []),                    # no number: not data to tune the layout of
    ("T = [\n    (1, 2),  # one\n    (3, 4),\n]", ["    (1, 2),  # one", "    (3, 4),"]),
])
def test_focus_candidates_take_only_rows_that_have_their_lines_to_themselves(table, rows):
    from openended.mutation.prompts import focus_candidates

    code = f"E = {{}}\n{table}\n\n\ndef g(x): return x + 1\n\n\ndef f(n):\n    return T\n"
    for text in (code, code.replace("\n", "\r\n")):
        # a one-line helper's body is not a line of its own; CRLF files give the same texts
        assert focus_candidates(text, "f") == ["    return T", *rows]


def test_a_focused_diff_on_a_statement_keeps_the_return_line_example():
    from openended.mutation.prompts import example_edit, prompt_example

    task = load_task("circle-packing")
    ctx = MutationContext.for_task(task, task.seed_files(), parent_fitness=2.1667)
    ctx.focus = "    xy = centres(n)"  # not a table row: no sibling's number edit (it could break the packing)
    assert prompt_example(ctx) == example_edit(ctx.parent_code, "pack")


@pytest.mark.parametrize("text, edited", [
    ("    (6, 1 / 12.0),", "    (7, 1 / 12.0),"),
    ("    (0.0, 2),", "    (0.5, 2),"),        # a zero float still changes
    ("    (1e-12, 2),", "    (1e-12, 3),"),     # an exponent's digits are not a number of their own
    ("    ('x1', a.b2),", None),
])
def test_the_example_number_edit_changes_one_whole_number(text, edited):
    from openended.mutation.prompts import _number_edit

    assert _number_edit(text) == edited
