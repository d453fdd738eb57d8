"""LLM operators with canned completions: children that apply, and failures with precise reasons."""

from dataclasses import dataclass

import pytest

from openended.mutation.llm_ops import REPEATS_EXAMPLE, TRUNCATED, LLMChild, MutationFailed, llm_mutate
from openended.mutation.prompts import MutationContext
from openended.mutation.search_replace import NO_BLOCK, NO_CHANGE
from openended.names import LLM_OPERATORS

PARENT = '''import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit."""
    gap = bins - item
    return -gap
'''
FIRST_FIT = "import numpy as np\n\n\ndef priority(item, bins):\n    return -np.arange(len(bins), dtype=float)\n"


@dataclass
class Completion:
    text: str
    tokens_in: int = 100
    tokens_out: int = 20
    truncated: bool = False
    finish_reason: str | None = "stop"
    max_tokens: int | None = 256


class Model:
    """A stand-in for the client: returns canned texts in turn and records the prompts it saw."""

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> Completion:
        self.prompts.append(prompt)
        return Completion(self.texts.pop(0))


def ctx(**fields) -> MutationContext:
    base = dict(task_prompt="Pack items.", code_file="priority.py", parent_files={"priority.py": PARENT.encode()},
                entry_point="priority", parent_fitness=-4.56, parent_feedback="2108 bins")
    base.update(fields)
    return MutationContext(**base)


def child_code(child: LLMChild) -> str:
    return child.files["priority.py"].decode()


def failure(kind: str, text: str, **fields) -> MutationFailed:
    model = Model(text)
    with pytest.raises(MutationFailed) as info:
        llm_mutate(kind, ctx(**fields), model)
    # the completion and the prompt travel with the failure, so tokens are still counted
    assert info.value.completion.text == text and info.value.completion.tokens_out == 20
    assert info.value.prompt == model.prompts[0]
    return info.value


# --- diff -------------------------------------------------------------------------------------


def test_good_diff_applies_and_passes_the_completion_through():
    # the prompt already opened the block: the completion continues after "<<<<<<< SEARCH\n"
    model = Model("    return -gap\n=======\n    return -gap ** 2\n>>>>>>> REPLACE\n\nMore text the model wrote.")
    child = llm_mutate("llm_diff", ctx(), model)
    assert child_code(child) == PARENT.replace("return -gap\n", "return -gap ** 2\n")
    assert child.completion.tokens_in == 100 and child.prompt == model.prompts[0]
    assert child.prompt.endswith("<<<<<<< SEARCH\n")


def test_diff_with_lost_indentation_applies_reindented():
    model = Model("gap = bins - item\nreturn -gap\n=======\n"
                  "gap = bins - item\nif item > 50:\n    gap = gap / 2\nreturn -gap\n>>>>>>> REPLACE")
    code = child_code(llm_mutate("llm_diff", ctx(), model))
    assert "    gap = bins - item\n    if item > 50:\n        gap = gap / 2\n    return -gap\n" in code


def test_diff_keeps_other_files_and_can_edit_a_named_one():
    files = {"priority.py": PARENT.encode(), "helpers.py": b"SCALE = 1.0\n"}
    text = ("    return -gap\n=======\n    return -gap * SCALE\n>>>>>>> REPLACE\n")
    child = llm_mutate("llm_diff", ctx(parent_files=files), Model(text))
    assert child.files["helpers.py"] == b"SCALE = 1.0\n"
    # a block naming another file of the genome edits that file (a complete response, prompt primer included)
    text = "x\n>>>>>>> REPLACE\n\nhelpers.py\n<<<<<<< SEARCH\nSCALE = 1.0\n=======\nSCALE = 2.0\n>>>>>>> REPLACE\n"
    with pytest.raises(MutationFailed):  # the first block is broken: no divider
        llm_mutate("llm_diff", ctx(parent_files=files), Model(text))
    text = "ignored\n=======\n>>>>>>> nope\n"  # not a block marker: block 1 is unterminated
    with pytest.raises(MutationFailed, match="block 1: unterminated"):
        llm_mutate("llm_diff", ctx(parent_files=files), Model(text))


def test_diff_editing_only_a_helper_file_is_a_change(tmp_path):
    files = {"priority.py": PARENT.encode(), "helpers.py": b"SCALE = 1.0\n"}
    (tmp_path / "diff.txt").write_text("$parent_code\nEdit:\n")  # a template that does not open the block
    text = "helpers.py\n<<<<<<< SEARCH\nSCALE = 1.0\n=======\nSCALE = 2.0\n>>>>>>> REPLACE\n"
    child = llm_mutate("llm_diff", ctx(parent_files=files), Model(text), templates_dir=tmp_path)
    assert child.files == {"priority.py": PARENT.encode(), "helpers.py": b"SCALE = 2.0\n"}
    bad = "helpers.py\n<<<<<<< SEARCH\nSCALE = 1.0\n=======\nSCALE = (\n>>>>>>> REPLACE\n"
    with pytest.raises(MutationFailed, match=r"the edited helpers\.py does not parse: line 1"):
        llm_mutate("llm_diff", ctx(parent_files=files), Model(bad), templates_dir=tmp_path)


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "helpers/../../evil.py", "./helpers.py"])
def test_diff_naming_a_path_outside_the_agent_fails_the_child_naming_it(tmp_path, name):
    files = {"priority.py": PARENT.encode(), "helpers.py": b"SCALE = 1.0\n"}
    (tmp_path / "diff.txt").write_text("$parent_code\nEdit:\n")  # a template that does not open the block
    text = f"{name}\n<<<<<<< SEARCH\n    return -gap\n=======\n    return -gap * 2\n>>>>>>> REPLACE\n"
    model = Model(text)
    with pytest.raises(MutationFailed) as info:
        llm_mutate("llm_diff", ctx(parent_files=files), model, templates_dir=tmp_path)
    assert info.value.reason.startswith(f"block 1: file name {name!r} ")
    assert info.value.completion.text == text  # its tokens still count


def test_diff_under_a_line_that_is_no_file_name_edits_the_code_file_only(tmp_path):
    (tmp_path / "diff.txt").write_text("$parent_code\nEdit:\n")
    text = "/etc/passwd\n<<<<<<< SEARCH\n    return -gap\n=======\n    return -gap * 2\n>>>>>>> REPLACE\n"
    child = llm_mutate("llm_diff", ctx(), Model(text), templates_dir=tmp_path)
    assert child.files == {"priority.py": PARENT.replace("return -gap\n", "return -gap * 2\n").encode()}


@pytest.mark.parametrize("text,reason", [
    ("    return -gap ** 2\n>>>>>>> REPLACE\n", "block 1: no ======= line between <<<<<<< SEARCH and >>>>>>> REPLACE"),
    # a block still open where the answer ends: the answer was cut off (kind truncated)
    ("    return -gap\n=======\n    return gap\n", "truncated: block 1: unterminated (no >>>>>>> REPLACE)"),
    ("    return -gap\n", "truncated: block 1: unterminated (no ======= line after <<<<<<< SEARCH)"),
    ("    return gap\n=======\n    return 0\n>>>>>>> REPLACE\n",
     "block 1: SEARCH text not found in priority.py; nearest lines 7-7 are:\n    return -gap"),
    ("    return -gap\n=======\n    return -gap\n>>>>>>> REPLACE\n", NO_CHANGE),
    ("    return -gap\n=======\n    return -gap  # same code, new comment\n>>>>>>> REPLACE\n", NO_CHANGE),
    ("    return -gap\n=======\n    result = -gap\n    return result\n>>>>>>> REPLACE\n", REPEATS_EXAMPLE),
    ("    return -gap\n=======\n    return -gap +\n>>>>>>> REPLACE\n",
     "the edited priority.py does not parse: line 7 (`return -gap +`): invalid syntax"),
    ("def priority(item: float, bins: np.ndarray) -> np.ndarray:\n=======\ndef score(item, bins):\n>>>>>>> REPLACE\n",
     "the edited priority.py defines no top-level function 'priority' (functions: ['score'])"),
])
def test_diff_failures_have_precise_reasons(text, reason):
    assert failure("llm_diff", text).reason == reason


def test_no_block_at_all(tmp_path):
    (tmp_path / "diff.txt").write_text("$parent_code\nYour edit:\n")
    with pytest.raises(MutationFailed) as info:
        llm_mutate("llm_diff", ctx(), Model("I would square the gap."), templates_dir=tmp_path)
    assert info.value.reason == NO_BLOCK


def test_only_the_first_block_counts_unless_asked():
    # a base model goes on writing after its edit; the rest is ignored like text after a stop sequence
    text = ("    return -gap\n=======\n    return -gap ** 2\n>>>>>>> REPLACE\n\n"
            "<<<<<<< SEARCH\n    gap = bins\n>>>>>>> REPLACE\n")
    assert "return -gap ** 2" in child_code(llm_mutate("llm_diff", ctx(), Model(text)))
    with pytest.raises(MutationFailed, match="block 2: no ======= line"):
        llm_mutate("llm_diff", ctx(), Model(text), max_blocks=None)


def test_last_error_reaches_the_next_prompt():
    first = failure("llm_diff", "    return gap\n=======\n    return 0\n>>>>>>> REPLACE\n")
    model = Model("    return -gap\n=======\n    return -gap * 2 - item\n>>>>>>> REPLACE\n")
    llm_mutate("llm_diff", ctx(last_error=first.reason), model)
    assert "SEARCH text not found in priority.py; nearest lines 7-7 are:\n    return -gap" in model.prompts[0]


# --- rewrite ----------------------------------------------------------------------------------


def test_rewrite_continues_the_primed_function():
    model = Model("    gap = bins - item\n    return np.where(gap == 0, 1e9, -gap)\n```\n\nThis is better because...")
    child = llm_mutate("llm_rewrite", ctx(), model)
    head = 'import numpy as np\n\n\ndef priority(item: float, bins: np.ndarray) -> np.ndarray:\n    """Best fit."""\n'
    assert model.prompts[0].endswith(head)
    assert child_code(child) == head + "    gap = bins - item\n    return np.where(gap == 0, 1e9, -gap)\n"


def test_rewrite_that_starts_over_with_a_whole_program():
    text = "```python\nimport numpy as np\n\ndef priority(item, bins):\n    return -(bins - item) ** 3\n```\n"
    code = child_code(llm_mutate("llm_rewrite", ctx(), Model(text)))
    assert code == "import numpy as np\n\ndef priority(item, bins):\n    return -(bins - item) ** 3\n"


def test_rewrite_rambling_after_the_function_is_cut():
    text = "    return -(bins - item) ** 2\n\nThis function is great because it is\n"
    code = child_code(llm_mutate("llm_rewrite", ctx(), Model(text)))
    assert code.endswith("    return -(bins - item) ** 2\n") and "great" not in code


@pytest.mark.parametrize("text,reason", [
    ("    gap = bins - item\n    return np.where(gap == 0,\n", "the new priority.py does not parse: line 7"),
    ("    gap = bins - item\n    return -gap\n```\n", NO_CHANGE),
    ("    gap = bins - item  # a comment is no change\n\n    return -gap\n", NO_CHANGE),
])
def test_rewrite_failures(text, reason):
    assert failure("llm_rewrite", text).reason.startswith(reason)


def test_rewrite_with_other_annotations_and_docstring_is_no_change():
    text = ('import numpy as np\n\ndef priority(item, bins):\n    """Other words."""\n'
            "    gap = bins - item\n    return -gap\n")
    assert failure("llm_rewrite", text).reason == NO_CHANGE


def test_equivalent_code_written_differently_counts_as_a_change():
    # Only the syntax tree is compared (minus docstrings and annotations): equivalence is not proved.
    assert "return -(bins - item)" in child_code(llm_mutate("llm_rewrite", ctx(), Model("    return -(bins - item)\n")))


def test_rewrite_must_define_the_entry_point(tmp_path):
    (tmp_path / "rewrite.txt").write_text("$parent_code\nA better program:\n```python\n")
    with pytest.raises(MutationFailed) as info:
        llm_mutate("llm_rewrite", ctx(), Model("def score(item, bins):\n    return bins\n```\n"),
                   templates_dir=tmp_path)
    assert info.value.reason == "the new priority.py defines no top-level function 'priority' (functions: ['score'])"


def test_rewrite_with_no_code():
    with pytest.raises(MutationFailed, match="holds no code"):
        llm_mutate("llm_rewrite", ctx(entry_point=None, parent_files={"priority.py": b"x = 1\n"}), Model("```\n"))


# --- crossover --------------------------------------------------------------------------------


def test_crossover_prompt_holds_both_parents_and_makes_a_child():
    model = Model("    gap = bins - item\n    return -gap - 0.01 * np.arange(len(bins))\n```\n")
    child = llm_mutate("llm_crossover", ctx(parent2_files={"priority.py": FIRST_FIT.encode()}, parent2_fitness=-5.2),
                       model)
    prompt = model.prompts[0]
    assert PARENT.strip() in prompt and FIRST_FIT.strip() in prompt and "-5.2" in prompt
    assert "np.arange(len(bins))" in child_code(child) and child_code(child).startswith("import numpy as np")


def test_crossover_copy_of_a_parent_fails():
    b = {"priority.py": FIRST_FIT.encode()}
    copy_b = "    return -np.arange(len(bins), dtype=float)\n```\n"
    assert failure("llm_crossover", copy_b, parent2_files=b).reason.startswith("the result is a copy of program B")
    copy_a = "    gap = bins - item\n    return -gap\n```\n"
    assert failure("llm_crossover", copy_a, parent2_files=b).reason == NO_CHANGE


def test_crossover_needs_a_second_parent():
    with pytest.raises(ValueError, match="needs parent2_files"):
        llm_mutate("llm_crossover", ctx(), Model("x"))


# --- the call ---------------------------------------------------------------------------------


class Unreachable(Exception):
    pass


def test_errors_of_the_call_propagate_and_bad_completions_fail():
    def down(prompt):
        raise Unreachable("connection refused")

    with pytest.raises(Unreachable):
        llm_mutate("llm_rewrite", ctx(), down)
    with pytest.raises(MutationFailed, match=r"the model client returned no text \(dict\)"):
        llm_mutate("llm_rewrite", ctx(), lambda prompt: {"text": "x"})


def test_unknown_operator():
    assert LLM_OPERATORS == ("llm_diff", "llm_rewrite", "llm_crossover")
    with pytest.raises(ValueError, match="unknown LLM operator 'llm_magic'"):
        llm_mutate("llm_magic", ctx(), Model("x"))


@pytest.mark.parametrize("kind", LLM_OPERATORS)
def test_an_answer_cut_off_by_max_tokens_fails_as_truncated_before_it_is_parsed(kind):
    # a complete, applicable edit: only the finish reason says it was cut off
    text = "    return -gap\n=======\n    return -gap ** 2\n>>>>>>> REPLACE\n"
    fields = {"parent2_files": {"priority.py": FIRST_FIT.encode()}} if kind == "llm_crossover" else {}
    with pytest.raises(MutationFailed) as info:
        llm_mutate(kind, ctx(**fields), lambda prompt: Completion(text, truncated=True, finish_reason="length",
                                                                   max_tokens=300))
    assert info.value.reason.startswith(f"{TRUNCATED}: ") and "300 tokens" in info.value.reason
    assert "finish reason length" in info.value.reason
    assert info.value.completion.tokens_out == 20, "its tokens are still counted"
