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
