"""Genomes up to formatting: layout, comments and docstrings never change the key; code always does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openended.mutation.normalise import genome_key, normalise_file, normalise_python

NAMES = ["a", "b", "gap", "score"]
OPS = ["+", "-", "*", "/"]

# A small program: assignments of `name = name op constant`, some inside an if-block, the whole in a function.
statement = st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(OPS),
                      st.integers(0, 50), st.booleans())
program = st.lists(statement, min_size=1, max_size=6)
# How a program is written: each draw a different choice of spacing, comments, blank lines, parentheses, docstrings.
style = st.fixed_dictionaries({
    "space": st.sampled_from(["", " ", "  "]),
    "comment": st.booleans(),
    "blank": st.integers(0, 2),
    "parens": st.booleans(),
    "docstring": st.sampled_from(["", '"""Doc."""', "'single quoted'", '"""Two\n    lines."""']),
    "trailing": st.sampled_from(["", "  ", "\t"]),
    "crlf": st.booleans(),
})


def render(statements: list, how: dict) -> str:
    s, blank = how["space"], "\n" * how["blank"]
    lines = ["import math" + ("  # the maths" if how["comment"] else ""), blank,
             "def f(a, b, gap, score):"]
    if how["docstring"]:
        lines.append(f"    {how['docstring']}")
    for target, left, op, value, guarded in statements:
        expr = f"{left}{s}{op}{s}{value}"
        if how["parens"]:
            expr = f"({expr})"
        assign = f"{target}{s}={s}{expr}" + (f"  # set {target}" if how["comment"] else "") + how["trailing"]
        if guarded:
            lines += [f"    if {left}{s}<{s}{value}:", f"        {assign}"]
        else:
            lines.append(f"    {assign}")
        if how["comment"]:
            lines.append("    # a comment line")
        lines.append(blank)
    lines.append(f"    return (a{s},{s}b)")
    text = "\n".join(lines) + "\n"
    return text.replace("\n", "\r\n") if how["crlf"] else text


@settings(max_examples=200, deadline=None)
@given(program, style, style)
def test_formatting_comments_and_docstrings_never_change_the_key(statements, one, other):
    a, b = render(statements, one), render(statements, other)
    assert genome_key({"agent.py": a.encode()}) == genome_key({"agent.py": b.encode()})


@settings(max_examples=200, deadline=None)
@given(program, style)
def test_normalising_is_idempotent(statements, how):
    once = normalise_python(render(statements, how))
    assert once is not None and normalise_python(once) == once
    for name in ("agent.py", "notes.txt"):
        data = render(statements, how).encode()
        assert normalise_file(name, normalise_file(name, data)) == normalise_file(name, data)


@settings(max_examples=100, deadline=None)
@given(program, style, st.data())
def test_a_change_of_code_changes_the_key(statements, how, data):
    i = data.draw(st.integers(0, len(statements) - 1))
    target, left, op, value, guarded = statements[i]
    changed = list(statements)
    changed[i] = (target, left, op, value + data.draw(st.integers(1, 5)), guarded)
    a, b = render(statements, how), render(changed, how)
    assert genome_key({"agent.py": a.encode()}) != genome_key({"agent.py": b.encode()})


def test_what_is_and_is_not_set_aside():
    key = lambda **files: genome_key({k.replace("_", "."): v.encode() for k, v in files.items()})  # noqa: E731
    # string statements compute nothing; annotations are kept (a dataclass reads them)
    assert key(a_py="x = 1\n'note'\n") == key(a_py="x = 1\n")
    assert key(a_py="x: int = 1\n") != key(a_py="x = 1\n")
    # a file that does not parse, and other text: trailing whitespace and blank lines only, indentation kept
    assert key(a_py="def f(:\n  x  \n\n") == key(a_py="def f(:\r\n  x\n")
    assert key(c_yaml="a:\n  b: 1\n") != key(c_yaml="a:\nb: 1\n")
    assert key(c_yaml="a:\n  b: 1   \n\n\n") == key(c_yaml="a:\r\n  b: 1")
    # file names count, and so does which file holds what
    assert key(a_py="x = 1\n") != key(b_py="x = 1\n")
    assert key(a_py="x = 1", b_py="y = 2") != key(a_py="x = 1\ny = 2", b_py="")
    # a binary file is compared as it is
    assert genome_key({"w.npy": b"\x93NUMPY \x00"}) != genome_key({"w.npy": b"\x93NUMPY\x00"})
