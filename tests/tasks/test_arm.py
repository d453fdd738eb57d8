"""The planar-arm repertoire task (openended/tasks/arm): kinematics, fitness, invalid genomes, a campaign."""

import importlib.util
import io
import math
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openended.tasks import builtin_task_names, load_task

ARM_DIR = Path(__file__).resolve().parents[2] / "openended" / "tasks" / "arm"


def _load_evaluator():
    name = "_arm_evaluate_under_test"
    spec = importlib.util.spec_from_file_location(name, ARM_DIR / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ev = _load_evaluator()


def genome(angles) -> dict[str, bytes]:
    buf = io.BytesIO()
    np.save(buf, np.asarray(angles))
    return {"weights.npy": buf.getvalue()}


def test_builtin_and_its_seed_is_the_straight_arm():
    assert "arm" in builtin_task_names()
    task = load_task("arm")
    assert task.genome_kind == "params" and task.batchable
    [result] = ev.evaluate_batch([task.seed_files()], task.evaluate_args)
    assert result["valid"] and result["fitness"] == 0.0
    assert result["descriptors"] == [12.0, 0.0]


def test_known_postures():
    # a right angle at the first joint only: every link points up; the first joint alone bent
    up = np.zeros(12)
    up[0] = math.pi / 2
    even = np.full(12, 2 * math.pi / 12)  # a closed regular 12-gon: the tip comes back to the base
    r_up, r_even = ev.evaluate_batch([genome(up), genome(even)], {})
    assert np.allclose(r_up["descriptors"], [0.0, 12.0])
    assert math.isclose(r_up["fitness"], -np.var(up))
    assert np.allclose(r_even["descriptors"], [0.0, 0.0], atol=1e-9)
    assert math.isclose(r_even["fitness"], 0.0, abs_tol=1e-12)  # evenly bent: no variance


def test_angles_beyond_pi_are_clipped():
    far = np.full(12, 10.0)
    [r] = ev.evaluate_batch([genome(far)], {})
    [r_pi] = ev.evaluate_batch([genome(np.full(12, math.pi))], {})
    assert r["descriptors"] == r_pi["descriptors"] and r["fitness"] == r_pi["fitness"]


def test_invalid_genomes_are_named_and_do_not_spoil_the_batch():
    results = ev.evaluate_batch([{}, genome([np.nan] * 12), {"weights.npy": b"junk"}, genome(np.zeros(12))],
                                {"dof": 12})
    assert [r["valid"] for r in results] == [False, False, False, True]
    assert "no weights.npy" in results[0]["feedback"]
    assert "non-finite" in results[1]["feedback"]
    assert "loadable" in results[2]["feedback"]
    [wrong] = ev.evaluate_batch([genome(np.zeros(5))], {"dof": 12})
    assert not wrong["valid"] and "12 joint angles" in wrong["feedback"]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (4, 12), elements=st.floats(-20, 20)))
def test_results_stay_in_the_task_bounds(batch):
    task = load_task("arm")
    space = task.descriptor_space
    results = ev.evaluate_batch([genome(row) for row in batch], {})
    for row, r in zip(batch, results, strict=True):
        assert r["valid"]
        assert task.fitness_lower <= -math.pi ** 2 <= r["fitness"] <= 0.0
        for v, lo, hi in zip(r["descriptors"], space["lower"], space["upper"], strict=True):
            assert lo - 1e-9 <= v <= hi + 1e-9
        # the tip is at most as far from the base as the arm is long, and batch order is kept
        assert math.hypot(*r["descriptors"]) <= 12 + 1e-9
        [alone] = ev.evaluate_batch([genome(row)], {})
        assert alone["descriptors"] == r["descriptors"]
