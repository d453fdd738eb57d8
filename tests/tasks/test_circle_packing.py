"""The circle-packing task (openended/tasks/circle-packing): strict validity, the seed, hostile agents, a
campaign through the CLI."""

from __future__ import annotations

import importlib.util
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.results import check_result
from openended.tasks import builtin_task_names, load_task

TASK_DIR = Path(__file__).resolve().parents[2] / "openended" / "tasks" / "circle-packing"
TASK = load_task("circle-packing")


def _evaluator():
    name = "_circle_packing_evaluate_under_test"
    spec = importlib.util.spec_from_file_location(name, TASK_DIR / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


EV = _evaluator()


def _run(source: str) -> dict:
    return EV.evaluate_batch([{"packing.py": source.encode()}], TASK.evaluate_args)[0]


def test_a_builtin_task_whose_seed_is_the_grid_of_twelfths():
    assert "circle-packing" in builtin_task_names()
    assert TASK.genome_kind == "code" and TASK.spec.fitness.tolerance > 0
    seed = EV.evaluate_batch([TASK.seed_files()], TASK.evaluate_args)[0]
    assert seed["valid"], seed["feedback"]
    assert seed["fitness"] == pytest.approx(26 / 12, abs=1e-9) and seed["fitness"] < 26 / 12
    # equal radii (up to rounding: computed from the centres); the bottom row and the three full rows' ends
    # above it touch a side (the row of two is centred, at x = 1/4 and 3/4): 12 of 26
    assert seed["descriptors"] == pytest.approx([0.0, 12 / 26], abs=1e-12)
    checked = check_result(seed, 2, None)
    assert checked.fitness == seed["fitness"]


def test_touching_circles_that_overlap_by_a_rounding_error_are_invalid():
    # the grid without the seed's shrink: circles 1 and 2 overlap by about 3e-17
    result = _run("def pack(n):\n    r = 1 / 12\n"
                  "    return [[r + 2 * r * (i % 6), r + 2 * r * (i // 6), r] for i in range(n)]\n")
    assert not result["valid"] and "overlap" in result["feedback"]


@pytest.mark.parametrize("source, reason", [
    ("def pack(n):\n    return 'circles'\n", "must return numbers"),
    ("def pack(n):\n    return [[10 ** 400, 0.5, 0.1]] * n\n", "must return numbers"),
    ("def pack(n):\n    return [[0.5, 0.5, 0.1]]\n", "shape (26, 3)"),
    ("def pack(n):\n    return [[float('nan'), 0.5, 0.01]] * n\n", "not finite"),
    ("def pack(n):\n    return [[0.5, 0.5, 0.0]] * n\n", "radius 0.0"),
    ("def pack(n):\n    return [[0.05 + 0.035 * i, 0.5, 0.01] for i in range(n - 1)] + [[0.99, 0.5, 0.02]]\n",
     "circle 25 (x=0.99, y=0.5, r=0.02) is not inside the unit square"),
    ("def pack(n):\n    raise RuntimeError('no idea')\n", "no idea"),
    ("import time\ndef pack(n):\n    time.sleep(60)\n", "too slow"),
])
def test_invalid_agents_get_a_precise_reason(source, reason):
    args = {**TASK.evaluate_args, "max_seconds": 3.0}
    result = EV.evaluate_batch([{"packing.py": source.encode()}], args)[0]
    assert result["valid"] is False and reason in result["feedback"], result["feedback"]


def _independently_valid(circles: list[list[float]]) -> bool:
    """The rules, written out again in plain Python (no numpy): inside the square, radii > 0, no overlap."""
    for x, y, r in circles:
        if not (r > 0 and x - r >= 0 and x + r <= 1 and y - r >= 0 and y + r <= 1):
            return False
    for a in range(len(circles)):
        for b in range(a + 1, len(circles)):
            (xa, ya, ra), (xb, yb, rb) = circles[a], circles[b]
            if math.hypot(xa - xb, ya - yb) - (ra + rb) < 0:
                return False
    return True


@st.composite
def packings(draw):
    """26 circles: random ones (rarely valid), or centres on a jittered grid with radii that fit (often valid)."""
    if draw(st.booleans()):
        rows = draw(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.3)), min_size=26,
                             max_size=26))
        return [list(row) for row in rows]
    jitter = draw(st.lists(st.floats(-0.02, 0.02), min_size=52, max_size=52))
    radii = draw(st.lists(st.floats(0.01, 0.085), min_size=26, max_size=26))
    return [[(2 * (i % 6) + 1) / 12 + jitter[2 * i], (2 * (i // 6) + 1) / 12 + jitter[2 * i + 1], radii[i]]
            for i in range(26)]


@settings(max_examples=300, deadline=None)
@given(packings())
def test_valid_exactly_when_every_rule_holds(circles):
    checked, problem = EV.check_packing(circles, 26)
    assert (checked is not None) == _independently_valid(circles), problem
    if checked is not None:  # a valid packing stays valid when it shrinks
        shrunk = [[x, y, r * 0.5] for x, y, r in circles]
        assert EV.check_packing(shrunk, 26)[0] is not None


def test_a_campaign_on_circle_packing_through_the_cli(tmp_path, cli_env, python, ray_address):
    db = tmp_path / "circles.db"
    proc = subprocess.run([python, "-m", "openended", "run", "--task", "circle-packing", "--db", str(db),
                           "--sandbox", "process", "--operator", "ast", "--budget", "24", "--seed", "3",
                           "--ray-address", ray_address, "--quiet"], env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT status, fitness, fail_stage FROM agents").fetchall()
    finally:
        con.close()
    assert len(rows) == 24
    assert all(status in ("archived", "rejected", "failed") for status, _, _ in rows)
    valid = [fitness for status, fitness, _ in rows if status != "failed"]
    assert valid and max(valid) >= 26 / 12 - 1e-9
    assert all(np.isfinite(valid))
