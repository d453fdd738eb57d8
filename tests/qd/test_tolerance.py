"""An elite is replaced only by a child fitter by more than the task's [fitness] tolerance and floating-point
noise; the margin is part of the archive's schema, so a resumed campaign keeps it."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.config import load_config
from openended.qd import make_archive, restore_archive
from openended.qd.archive import FLOAT_NOISE
from openended.tasks.spec import parse_task_spec

SPACE = {"names": ["x"], "lower": [0.0], "upper": [1.0], "bins": [4]}


def grid(**margin):
    return make_archive("grid", space=SPACE, fitness_offset=-10.0, **margin)


def test_a_child_must_beat_the_elite_by_more_than_the_tolerance():
    archive = grid(tolerance=0.5)
    assert archive.add(0, 1.0, [0.1]).status == "new_cell"
    assert archive.add(1, 1.5, [0.1]).status == "not_added"  # by exactly the tolerance: not more
    assert archive.add(2, 1.4, [0.1]).status == "not_added"
    assert archive.add(3, 1.6, [0.1]).status == "improved"
    assert archive.elites()[0]["agent_id"] == 3


def test_floating_point_noise_never_replaces_an_elite():
    # The case: a +4e-16 change to the circle-packing seed's 2.1667 replaced an elite.
    noisy, strict = grid(noise=FLOAT_NOISE), grid()
    for archive in (noisy, strict):
        archive.add(0, 2.1667, [0.1])
    assert noisy.add(1, 2.1667 + 4e-16, [0.1]).status == "not_added"
    assert strict.add(1, 2.1667 + 4e-16, [0.1]).status == "improved"  # the library default: strictly fitter
    assert noisy.add(2, 2.1667 + 1e-9, [0.1]).status == "improved"  # a real, small improvement still counts
    cvt = make_archive("cvt", space=SPACE, fitness_offset=-10.0, cells=4, noise=FLOAT_NOISE)
    cvt.add(0, -3.0, [0.5])
    assert cvt.add(1, -3.0 + 1e-15, [0.5]).status == "not_added"


@settings(max_examples=200, deadline=None)
@given(tolerance=st.sampled_from([0.0, 1e-6, 0.25, 3.0]), noise=st.sampled_from([0.0, FLOAT_NOISE, 1e-3]),
       offers=st.lists(st.tuples(st.floats(-5, 5), st.floats(0, 1)), min_size=1, max_size=40))
def test_every_replacement_beats_the_elite_it_replaces_by_more_than_the_margin(tolerance, noise, offers):
    archive = grid(tolerance=tolerance, noise=noise)
    held: dict[int, float] = {}
    for agent_id, (fitness, x) in enumerate(offers):
        result = archive.add(agent_id, fitness, [x])
        cell = archive.measurement_cell([x])
        if cell in held:
            margin = max(tolerance, noise * max(1.0, abs(held[cell])))
            assert (result.status == "improved") == (fitness - held[cell] > margin)
        if result.status != "not_added":
            held[cell] = fitness
    # and the same offers through a restored copy: the margin travels in the schema
    copy = restore_archive(schema=archive.schema(), state=archive.state(), elites=archive.elites())
    assert (copy.tolerance, copy.noise) == (tolerance, noise)


def test_a_schema_without_a_margin_restores_strictly_fitter():
    legacy = grid().schema()
    assert "tolerance" not in legacy and "noise" not in legacy  # what campaigns stored before the margin
    restored = restore_archive(schema=legacy, state={}, elites=[])
    assert (restored.tolerance, restored.noise) == (0.0, 0.0)


@pytest.mark.parametrize("value", [-0.1, float("inf"), "a little"])
def test_a_bad_tolerance_is_an_error_naming_the_key(value):
    with pytest.raises(ValueError, match=r"task.toml: key 'fitness.tolerance'"):
        parse_task_spec({"fitness": {"tolerance": value}}, "task.toml")


def test_the_task_s_tolerance_reaches_the_campaign_s_archive_and_stays_on_resume(tmp_path):
    from openended.engine import Campaign

    task = tmp_path / "toycode"
    shutil.copytree(ROOT / "tests" / "tasks" / "toycode", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace('upper = 0.0\n', 'upper = 0.0\ntolerance = 0.25\n'))
    db = str(tmp_path / "t.db")
    campaign = Campaign(load_config(None, {"task": str(task), "db": db, "archive.kind": "grid",
                                           "sandbox.kind": "inprocess"}))
    assert (campaign.archive.tolerance, campaign.archive.noise) == (0.25, FLOAT_NOISE)
    campaign.close()
    resumed = Campaign(load_config(None, {"db": db}), resume_only=True)
    assert (resumed.archive.tolerance, resumed.archive.noise) == (0.25, FLOAT_NOISE)
    resumed.close()
