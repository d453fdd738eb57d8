"""LLM-free AST edits: each kind does what it says, children parse and differ, determinism, errors."""

import ast
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.mutation import OPERATOR_PARAMS, check_params, mutate
from openended.mutation.ast_edit import EDIT_KINDS, ast_mutate, edit_source
from openended.tasks import load_task

SOURCE = '''import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Prefer tight bins; halve the gap of large items."""
    gap = bins - item  # remaining room after placing the item
    if item > 50:
        gap = gap * 0.5
    elif item == 3:
        gap += 1
    score = -gap
    return score
'''


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def nodes(source: str, kind: type) -> list:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, kind)]


def test_deterministic_given_the_generator():
    assert edit_source(SOURCE, rng(7), edits=3) == edit_source(SOURCE, rng(7), edits=3)
    assert len({edit_source(SOURCE, rng(s)) for s in range(30)}) > 10


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 4))
def test_property_child_parses_and_differs(seed, edits):
    child = edit_source(SOURCE, rng(seed), edits=edits)
    assert ast.dump(ast.parse(child)) != ast.dump(ast.parse(SOURCE))


def _kind_of_edit(child: str) -> str:
    def arith(src):
        return [type(n.op) for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.BinOp, ast.AugAssign))]

    def compares(src):
        return [type(o) for n in nodes(src, ast.Compare) for o in n.ops]

    if arith(child) != arith(SOURCE):
        return "operator"
    if compares(child) != compares(SOURCE):
        return "comparison"
    if _without_numbers(child) == _without_numbers(SOURCE):
        return "constant"
    return "swap"


def test_every_kind_is_used():
    counts = Counter(_kind_of_edit(edit_source(SOURCE, rng(seed))) for seed in range(80))
    # kinds are drawn uniformly: each should get about 20 of 80
    assert set(counts) == set(EDIT_KINDS) and min(counts.values()) >= 8, counts


def numbers(source: str) -> list:
    """The numeric literals of ``source`` in walk order, a unary minus folded into its literal."""
    out, negated = [], set()
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) and isinstance(n.operand, ast.Constant):
            negated.add(id(n.operand))
        if isinstance(n, ast.Constant) and type(n.value) in (int, float):
            out.append(-n.value if id(n) in negated else n.value)
    return out


def test_constant_edit_changes_one_number_only():
    parent_numbers = numbers(SOURCE)
    for seed in range(20):
        child = edit_source(SOURCE, rng(seed), kinds=["constant"], scale=0.5)
        child_numbers = numbers(child)
        assert len(child_numbers) == len(parent_numbers)
        changed = [(a, b) for a, b in zip(parent_numbers, child_numbers, strict=True)
                   if a != b or type(a) is not type(b)]
        assert len(changed) == 1
        old, new = changed[0]
        assert type(old) is type(new)  # ints stay ints (an index stays an index)
        # everything but the numbers is the same tree
        assert _without_numbers(child) == _without_numbers(SOURCE)


class _ZeroNumbers(ast.NodeTransformer):
    """Every numeric literal (a unary minus folded in) becomes 0: trees that differ only in numbers compare equal."""

    def visit_UnaryOp(self, node):
        if (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
                and type(node.operand.value) in (int, float)):
            return ast.Constant(0)
        return self.generic_visit(node)

    def visit_Constant(self, node):
        return ast.Constant(0) if type(node.value) in (int, float) else node


def _without_numbers(source: str) -> str:
    return ast.dump(_ZeroNumbers().visit(ast.parse(source)))


def test_negative_constant_keeps_precedence():
    # (-2.0) ** x is positive for x = 2; a perturbed base written as "-c ** x" would make it negative
    for seed in range(20):
        child = edit_source("y = (-2.0) ** x\n", rng(seed), kinds=["constant"], scale=0.3)
        scope: dict = {"x": 2}
        exec(child, scope)
        assert scope["y"] >= 0 and scope["y"] != 4.0


def test_integer_constant_always_changes_by_at_least_one():
    for seed in range(20):
        child = edit_source("n = 3\n", rng(seed), kinds=["constant"], scale=0.0)
        value = ast.parse(child).body[0].value
        number = -value.operand.value if isinstance(value, ast.UnaryOp) else value.value
        assert isinstance(number, int) and abs(number - 3) == 1


def test_operator_edit_swaps_one_arithmetic_operator():
    for seed in range(10):
        child = edit_source("y = a + b * c\n", rng(seed), kinds=["operator"])
        ops = [type(n.op) for n in nodes(child, ast.BinOp)]
        assert len(ops) == 2 and sum(a is not b for a, b in zip(ops, [ast.Add, ast.Mult], strict=True)) == 1
        assert set(ops) <= {ast.Add, ast.Sub, ast.Mult, ast.Div}


@pytest.mark.parametrize("op,allowed", [
    ("<", {"<=", ">"}), ("<=", {"<", ">="}), (">", {">=", "<"}), (">=", {">", "<="}), ("==", {"!="}), ("!=", {"=="}),
])
def test_comparison_edit(op, allowed):
    seen = {edit_source(f"ok = a {op} b\n", rng(seed), kinds=["comparison"]).split()[3] for seed in range(20)}
    assert seen == allowed


def test_swap_edit_swaps_adjacent_statements():
    child = edit_source("a = 1\nb = 2\n", rng(0), kinds=["swap"])
    assert child == "b = 2\na = 1\n"
    # imports, defs, docstrings and identical statements are not swapped
    with pytest.raises(ValueError, match="no AST edit possible"):
        edit_source('"""doc"""\nimport os\nimport sys\ndef f():\n    pass\nx = 1\nx = 1\n', rng(0), kinds=["swap"])


def test_no_edit_possible():
    with pytest.raises(ValueError, match=r"no AST edit possible in f\.py"):
        edit_source("import numpy as np\n\n\ndef f(x):\n    return x\n", rng(0), filename="f.py")


@pytest.mark.parametrize("kwargs,message", [
    ({"kinds": ["rename"]}, "AST edit kinds must be a non-empty subset"),
    ({"kinds": []}, "AST edit kinds must be a non-empty subset"),
    ({"edits": 0}, "edits must be an integer >= 1"),
    ({"scale": float("nan")}, "scale must be a finite number >= 0"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        edit_source(SOURCE, rng(0), **kwargs)


def test_unparsable_parent():
    with pytest.raises(ValueError, match=r"p\.py does not parse \(line 1"):
        edit_source("def f(:\n", rng(0), filename="p.py")


def test_ast_mutate_edits_only_the_code_file():
    files = {"priority.py": SOURCE.encode(), "notes.txt": b"keep me"}
    child = ast_mutate(files, rng(3), code_file="priority.py", params={"edits": 2})
    assert child["notes.txt"] == b"keep me" and child["priority.py"] != files["priority.py"]
    ast.parse(child["priority.py"].decode())
    missing = r"code file 'main\.py' missing from the parent \(files: \['notes\.txt', 'priority\.py'\]\)"
    with pytest.raises(ValueError, match=missing):
        ast_mutate(files, rng(3), code_file="main.py", params={})
    with pytest.raises(ValueError, match="priority.py is not UTF-8"):
        ast_mutate({"priority.py": b"\xff\xfe"}, rng(3), code_file="priority.py", params={})


def test_registered_operator_uses_the_task_code_file():
    task = load_task("binpack")
    assert OPERATOR_PARAMS["ast"] == {"scale", "edits", "kinds"}
    check_params("ast", task.operator_params("ast"))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigma'\] for mutation operator 'ast'"):
        check_params("ast", {"sigma": 0.1})
    parent = task.seed_files()
    child = mutate("ast", parent, rng(1), task, task.operator_params("ast"))
    assert set(child) == set(parent) and child[task.spec.code_file] != parent[task.spec.code_file]
    assert child == mutate("ast", parent, rng(1), task, task.operator_params("ast"))
    assert set(EDIT_KINDS) == {"constant", "operator", "comparison", "swap"}
