"""SEARCH/REPLACE blocks: parsing tolerance, exact and whitespace-tolerant matching, precise errors."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.mutation.search_replace import (
    NO_BLOCK,
    NO_CHANGE,
    PatchError,
    apply_patch,
    parse_blocks,
)

SOURCE = """import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    \"\"\"Best fit.\"\"\"
    gap = bins - item
    score = -gap
    return score
"""


def block(search: str | list[str], replace: str | list[str]) -> str:
    """A block from texts or from lists of lines (a list tells no lines [] from one blank line [""])."""
    search = search.split("\n") if isinstance(search, str) else search
    replace = (replace.split("\n") if replace else []) if isinstance(replace, str) else replace
    return "\n".join(["<<<<<<< SEARCH", *search, "=======", *replace, ">>>>>>> REPLACE"]) + "\n"


def reason(source: str, response: str) -> str:
    with pytest.raises(PatchError) as info:
        apply_patch(source, response, "priority.py")
    return info.value.reason


# --- parsing ----------------------------------------------------------------------------------


def test_exact_block_applies():
    out = apply_patch(SOURCE, block("    score = -gap", "    score = -gap ** 2"), "priority.py")
    assert out == SOURCE.replace("score = -gap\n", "score = -gap ** 2\n")


@pytest.mark.parametrize("search_marker,divider,replace_marker", [
    ("<<<<<<<SEARCH", "=======", ">>>>>>>REPLACE"),
    ("<<<<< SEARCH", "=====", ">>>>> REPLACE"),
    ("<<<<<<<<< search", "==========", ">>>>>>>>>> replace"),
    ("  <<<<<<< SEARCH  ", " ======= ", " >>>>>>> REPLACE "),
])
def test_marker_variants(search_marker, divider, replace_marker):
    response = f"{search_marker}\n    score = -gap\n{divider}\n    score = gap\n{replace_marker}\n"
    assert "    score = gap\n" in apply_patch(SOURCE, response, "priority.py")


def test_fences_file_name_and_prose_are_tolerated():
    response = (
        "Here is my change, it should help.\n\npriority.py\n```python\n<<<<<<< SEARCH\n"
        "    score = -gap\n=======\n    score = -gap * 1.5\n>>>>>>> REPLACE\n```\nThat is all.\n"
    )
    blocks = parse_blocks(response)
    assert [(b.filename, b.search, b.replace) for b in blocks] == [
        ("priority.py", ("    score = -gap",), ("    score = -gap * 1.5",))
    ]
    assert "score = -gap * 1.5" in apply_patch(SOURCE, response, "priority.py")


def test_fences_inside_sections_are_dropped():
    response = "<<<<<<< SEARCH\n```python\n    score = -gap\n```\n=======\n```\n    score = gap\n```\n>>>>>>> REPLACE"
    [b] = parse_blocks(response)
    assert b.search == ("    score = -gap",) and b.replace == ("    score = gap",)


def test_closing_fence_ends_a_block_without_replace_marker():
    response = "```python\n<<<<<<< SEARCH\n    score = -gap\n=======\n    score = gap\n```\nSome prose.\n"
    [b] = parse_blocks(response)
    assert b.replace == ("    score = gap",)
    assert "    score = gap\n" in apply_patch(SOURCE, response, "priority.py")


def test_max_blocks_ignores_what_follows():
    response = block("    score = -gap", "    score = gap") + "<<<<<<< SEARCH\n    gap = 1\n"
    assert len(parse_blocks(response, max_blocks=1)) == 1
    with pytest.raises(PatchError, match="block 2: unterminated"):
        parse_blocks(response)


def test_crlf_response():
    out = apply_patch(SOURCE, block("    score = -gap", "    score = gap").replace("\n", "\r\n"), "priority.py")
    assert "    score = gap\n" in out and "\r" not in out


def test_several_blocks_apply_in_order():
    response = block("    gap = bins - item", "    gap = bins - item + 1") + "\n" + block(
        "    gap = bins - item + 1", "    gap = (bins - item) / 2")
    assert "    gap = (bins - item) / 2\n" in apply_patch(SOURCE, response, "priority.py")


def test_empty_replace_deletes_lines():
    out = apply_patch(SOURCE, block('    """Best fit."""', ""), "priority.py")
    assert "Best fit" not in out and out.count("\n") == SOURCE.count("\n") - 1


# --- errors -----------------------------------------------------------------------------------


def test_no_block():
    assert reason(SOURCE, "I would change the score to be squared.") == NO_BLOCK


def test_unterminated_without_replace_marker():
    assert reason(SOURCE, "<<<<<<< SEARCH\n    score = -gap\n=======\n    score = gap\n") == \
        "block 1: unterminated (no >>>>>>> REPLACE)"


def test_unterminated_without_divider():
    assert reason(SOURCE, "<<<<<<< SEARCH\n    score = -gap\n") == \
        "block 1: unterminated (no ======= line after <<<<<<< SEARCH)"


def test_next_block_before_replace_marker():
    response = block("    score = -gap", "    score = gap") + "<<<<<<< SEARCH\n    gap\n=======\nx\n<<<<<<< SEARCH\n"
    assert reason(SOURCE, response).startswith("block 2: unterminated (no >>>>>>> REPLACE before the next marker")


@pytest.mark.parametrize(("header", "why"), [
    ("../evil.py", "'..'"), ("lib/../../evil.py", "'..'"), ("/etc/evil.py", "absolute path"),
    ("`./priority.py`", "'.'"), ("lib//priority.py", "empty segment"),
])
def test_a_file_name_that_is_no_genome_path_fails_its_block_naming_it(header, why):
    name = header.strip("`")
    response = "Edit:\n\n" + header + "\n" + block("    score = -gap", "    score = gap") + \
        "\nlib/helpers.py\n" + block("x", "y")
    problem = reason(SOURCE, response)
    assert problem.startswith(f"block 1: file name {name!r} ") and why in problem, problem
    # a later block: its number is named, and the blocks after max_blocks are not read at all
    later = "lib/helpers.py\n" + block("    score = -gap", "    score = gap") + f"\n{header}\n" + block("x", "y")
    with pytest.raises(PatchError, match=rf"^block 2: file name {re.escape(repr(name))} "):
        parse_blocks(later)
    assert [b.filename for b in parse_blocks(later, max_blocks=1)] == ["lib/helpers.py"]


def test_a_line_that_is_no_file_name_is_prose():
    # no extension: not read as a file name at all, so the block has none (the code file is edited)
    response = "/etc/passwd\n" + block("    score = -gap", "    score = gap")
    assert [b.filename for b in parse_blocks(response)] == [None]


def test_missing_divider():
    assert reason(SOURCE, "<<<<<<< SEARCH\n    score = -gap\n>>>>>>> REPLACE\n") == \
        "block 1: no ======= line between <<<<<<< SEARCH and >>>>>>> REPLACE"


def test_not_found_quotes_nearest_lines():
    response = (block("    score = -gap", "    score = gap")
                + block("    scor = gap - 1\n    return scre", "    return 0"))
    text = reason(SOURCE, response)
    # block 1 applied first, so block 2 is compared with the edited file: lines 7-8
    assert text == ("block 2: SEARCH text not found in priority.py; nearest lines 7-8 are:\n"
                    "    score = gap\n    return score")


def test_ambiguous_match():
    source = "x = 1\ny = 2\nx = 1\n"
    assert reason(source, block("x = 1", "x = 3")) == \
        "block 1: SEARCH text matches 2 places in priority.py; include more context"


def test_ambiguous_only_under_whitespace_tolerance():
    source = "if a:\n    x = 1\nx = 1\n"
    assert reason(source, block("  x = 1", "x = 3")).endswith("matches 2 places in priority.py; include more context")


def test_edit_that_changes_nothing():
    assert reason(SOURCE, block("    score = -gap", "    score = -gap")) == NO_CHANGE


def test_empty_search():
    assert reason(SOURCE, block("", "x = 1")).startswith("block 1: SEARCH section is empty")


# --- whitespace tolerance ---------------------------------------------------------------------


def test_trailing_whitespace_and_blank_lines():
    response = block("\n    gap = bins - item   \n\n    score = -gap\t\n", "    gap = bins - item\n    score = gap")
    out = apply_patch(SOURCE, response, "priority.py")
    assert "    gap = bins - item\n    score = gap\n    return score\n" in out


def test_indentation_shift_reindents_replacement():
    # the model dropped the function's indentation in both sections
    response = block("gap = bins - item\nscore = -gap",
                     "gap = bins - item\nif item > 50:\n    gap = gap / 2\nscore = -gap")
    out = apply_patch(SOURCE, response, "priority.py")
    assert "    gap = bins - item\n    if item > 50:\n        gap = gap / 2\n    score = -gap\n" in out


def test_over_indented_search_is_shifted_left():
    source = "def f(x):\n    return x\n"
    out = apply_patch(source, block("        return x", "        return x + 1"), "f.py")
    assert out == "def f(x):\n    return x + 1\n"


# --- properties -------------------------------------------------------------------------------

# Lines with unique content (the index) so that every window occurs once, even ignoring whitespace.
_line = st.tuples(st.integers(0, 3), st.sampled_from(["x", "y = z", "return a", "f(b)"]))


@st.composite
def _file(draw):
    """(lines, line contents): numbered statements at indents 0-3 levels, with blank lines between."""
    specs = draw(st.lists(_line, min_size=1, max_size=15))
    lines = []
    for i, (level, body) in enumerate(specs):
        if draw(st.booleans()) and draw(st.booleans()):
            lines.append("")
        lines.append("    " * level + f"{body}  # {i}")
    return lines


@st.composite
def _window(draw, lines):
    """(a, b) with lines[a] and lines[b-1] non-blank."""
    content = [i for i, line in enumerate(lines) if line.strip()]
    a = draw(st.sampled_from(content))
    b = draw(st.sampled_from([i for i in content if i >= a])) + 1
    return a, b


_replacement = st.lists(st.sampled_from(["new()", "    deeper = 1", "", "other(2)"]), max_size=4)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_exact_block_yields_expected_text(data):
    lines = data.draw(_file())
    a, b = data.draw(_window(lines))
    replace = data.draw(_replacement)
    source = "\n".join(lines + [""])  # ends with a newline
    expected = "\n".join(lines[:a] + replace + lines[b:] + [""])
    response = block(lines[a:b], replace)
    if expected == source:
        with pytest.raises(PatchError, match=NO_CHANGE):
            apply_patch(source, response)
    else:
        assert apply_patch(source, response) == expected


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_whitespace_perturbed_search_gives_same_result(data):
    lines = data.draw(_file())
    a, b = data.draw(_window(lines))
    replace = ["    " + r if r else r for r in data.draw(_replacement)]  # indented at least one level
    source = "\n".join(lines) + "\n"
    exact_response = block(lines[a:b], replace)
    try:
        expected = apply_patch(source, exact_response)
    except PatchError as exc:
        assert exc.reason == NO_CHANGE
        return

    search = list(lines[a:b])
    # a uniform shift of both sections: right by up to 3 columns or left by what both can lose
    min_indent = min(len(s) - len(s.lstrip()) for s in search + replace if s.strip())
    shift = data.draw(st.integers(-min_indent, 3))
    shift_line = (lambda s: (" " * shift + s) if shift >= 0 else s[-shift:]) if shift else (lambda s: s)
    search = [shift_line(s) if s.strip() else s for s in search]
    shifted_replace = [shift_line(s) if s.strip() else s for s in replace]
    # trailing whitespace on some lines; blank lines removed or added anywhere
    search = [s + data.draw(st.sampled_from(["", " ", "\t", "   "])) for s in search]
    if data.draw(st.booleans()):
        search = [s for s in search if s.strip()]
    for _ in range(data.draw(st.integers(0, 2))):
        search.insert(data.draw(st.integers(0, len(search))), data.draw(st.sampled_from(["", "  "])))
    perturbed = block(search, shifted_replace)
    assert apply_patch(source, perturbed) == expected
