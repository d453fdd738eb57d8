"""A user's task.toml with a typo is refused: the file, the key, its table and line, and the closest
valid key; every variant is checked, not only the one asked for; a task's map is read."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from openended.tasks import BUILTIN_DIR, TaskError, load_task

TOY = Path(__file__).parent / "toy"


def _toy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "mytask"
    shutil.copytree(TOY, folder)
    toml = folder / "task.toml"
    toml.write_text(edit(toml.read_text()))
    return folder


def _line_of(folder: Path, text: str) -> int:
    lines = (folder / "task.toml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if text in line)


@pytest.mark.parametrize(("edit", "written", "key", "hint"), [
    (("[fitness]", "[fitnes]"), "[fitnes]", "fitnes", "fitness"),
    (("timeout_s = 30", "timout_s = 30"), "timout_s", "limits.timout_s", "timeout_s"),
    (('params_file = "weights.npy"', 'paramsfile = "weights.npy"'), "paramsfile", "paramsfile", "params_file"),
    (("upper = 0.0", "uper = 0.0"), "uper", "fitness.uper", "upper"),
    (("bins = 8 },\n  { name", "bin = 8 },\n  { name"), "bin = 8", "descriptors.0.bin", "bins"),
    (("[variants.plain]", "[variant.plain]"), "[variant.plain]", "variant", "variants"),
])
def test_a_misspelt_key_is_refused_naming_file_key_line_and_the_closest_key(tmp_path, edit, written, key, hint):
    folder = _toy(tmp_path, lambda t: t.replace(*edit, 1))
    line = _line_of(folder, written)
    with pytest.raises(TaskError) as err:
        load_task(f"{folder}:plain" if "variant.plain" not in written else str(folder))
    message = str(err.value)
    assert str(folder / "task.toml") in message
    assert f"key '{key}' (line {line}): unknown key (did you mean '{hint}'?)" in message, message


def test_several_typos_are_all_named(tmp_path):
    folder = _toy(tmp_path, lambda t: t.replace("[fitness]", "[fitnes]").replace("timeout_s", "timout_s")
                  .replace("params_file", "paramsfile"))
    with pytest.raises(TaskError) as err:
        load_task(f"{folder}:plain")
    assert all(f"key '{k}'" in str(err.value) for k in ("fitnes", "limits.timout_s", "paramsfile"))


def test_a_typo_in_another_variant_is_refused_too(tmp_path):
    """Loading variant plain validates slow as well: its typo would otherwise wait for the day it is used."""
    folder = _toy(tmp_path, lambda t: t.replace("evaluate_args = { sleep_s", "evaluate_arg = { sleep_s"))
    line = _line_of(folder, "evaluate_arg =")
    with pytest.raises(TaskError, match=rf"task\.toml \(variant slow\): key 'evaluate_arg' \(in \[variants\.slow\], "
                                        rf"line {line}\): unknown key \(did you mean 'evaluate_args'\?\)"):
        load_task(f"{folder}:plain")


def test_a_key_far_from_any_is_named_without_a_guess(tmp_path):
    folder = _toy(tmp_path, lambda t: t.replace("[limits]", "[limits]\nzzzqqq = 1"))
    with pytest.raises(TaskError, match=r"key 'limits\.zzzqqq' \(line \d+\): unknown key$"):
        load_task(f"{folder}:plain")


def test_variants_must_be_tables(tmp_path):
    folder = _toy(tmp_path, lambda t: "variants = 3\n" + t[: t.index("[variants.plain]")])
    with pytest.raises(TaskError, match=r"task\.toml: key 'variants' must be a table of tables"):
        load_task(str(folder))


def test_the_maze_variants_have_their_maps_and_a_broken_map_is_named(tmp_path):
    spec = importlib.util.spec_from_file_location("_maze_sim_for_test", BUILTIN_DIR / "maze" / "maze_sim.py")
    sim = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sim  # its dataclass looks its module up
    spec.loader.exec_module(sim)
    for variant in ("medium", "hard"):
        task_map, maze = load_task(f"maze-{variant}").map(), sim.load_maze(variant)
        assert np.array_equal(task_map.walls, maze.walls) and task_map.walls.shape[1] == 4
        assert task_map.start == tuple(maze.start) and task_map.goal == tuple(maze.goal)

    assert load_task(f"{TOY}:plain").map() is None  # no map named
    folder = _toy(tmp_path, lambda t: t.replace("[variants.plain]\nevaluate_args = {}",
                                                '[variants.plain]\nevaluate_args = { map = "mine" }'))
    assert load_task(f"{folder}:plain").map() is None  # named, but no maps/mine.txt
    (folder / "maps").mkdir()
    (folder / "maps" / "mine.txt").write_text("1\n0 0\n0\n1 1\n0 0 2 2 2\n")
    with pytest.raises(TaskError, match=r"its map: .*mine\.txt:5: expected wall 1 of 1"):
        load_task(f"{folder}:plain").map()
    (folder / "maps" / "mine.txt").write_text("1\n0 0\n0\n1 1\n0 0 2 2\n")
    assert load_task(f"{folder}:plain").map().walls.tolist() == [[0, 0, 2, 2]]
