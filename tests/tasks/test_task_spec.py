"""task.toml is validated: a bad key or value is refused naming the key and the file; defaults live in TaskSpec."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from openended.tasks import TaskError, builtin_task_names, load_task

TOY = Path(__file__).parent / "toy"
HOSTILE = Path(__file__).parent / "hostile"


def _task(tmp_path: Path, source: Path, edit) -> str:
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    toml = folder / "task.toml"
    toml.write_text(edit(toml.read_text()))
    return str(folder)


@pytest.mark.parametrize("name", builtin_task_names())
def test_every_builtin_task_validates(name):
    task = load_task(name)
    assert task.spec.descriptors and task.descriptor_space["names"]
    assert task.fitness_lower < (task.spec.fitness.upper if task.spec.fitness.upper is not None else float("inf"))


def test_a_variant_sets_its_own_floor_and_args():
    hard = load_task("maze-hard")
    assert hard.fitness_lower == -276.0 and hard.evaluate_args == {"map": "hard"}
    assert hard.limits == {"timeout_s": 60, "memory_mb": 512, "cpus": 1.0}


def test_a_task_without_its_variant_names_each_as_it_can_be_typed():
    with pytest.raises(TaskError, match="needs a variant") as folder_error:
        load_task(str(TOY))
    message = str(folder_error.value)
    for typed in message.split("one of: ")[1].split(", "):  # a folder's variant goes after a colon
        assert typed.startswith(f"{TOY}:") and load_task(typed).variant == typed.split(":")[1]
    with pytest.raises(TaskError, match="one of: maze-medium, maze-hard"):  # a built-in's after a dash
        load_task("maze")


def test_an_unknown_key_is_named_with_the_file(tmp_path):
    folder = _task(tmp_path, TOY, lambda t: t.replace("batchable = true", "batchable = true\nbatchsize = 4"))
    with pytest.raises(TaskError, match=r"task\.toml \(variant plain\): key 'batchsize' \(line \d+\): unknown key"):
        load_task(f"{folder}:plain")


def test_a_value_of_the_wrong_type_is_named(tmp_path):
    folder = _task(tmp_path, TOY, lambda t: t.replace("timeout_s = 30", 'timeout_s = "soon"'))
    with pytest.raises(TaskError, match=r"key 'limits\.timeout_s'"):
        load_task(f"{folder}:plain")


def test_descriptor_bounds_must_be_ordered(tmp_path):
    folder = _task(tmp_path, TOY, lambda t: t.replace('{ name = "x", lower = -4.0, upper = 4.0',
                                                      '{ name = "x", lower = 4.0, upper = -4.0'))
    with pytest.raises(TaskError, match=r"key 'descriptors\.0'.*descriptor 'x': upper \(-4\.0\) must be above"):
        load_task(f"{folder}:plain")


def test_a_params_genome_needs_its_param_count(tmp_path):
    folder = _task(tmp_path, TOY, lambda t: t.replace("param_count = 2\n", ""))
    with pytest.raises(TaskError, match="a params genome needs param_count"):
        load_task(f"{folder}:plain")


def test_code_file_defaults_to_main_py_and_must_be_in_the_seed(tmp_path):
    folder = _task(tmp_path, HOSTILE, lambda t: t.replace('code_file = "child.py"\n', ""))
    with pytest.raises(TaskError, match=r"key 'code_file': seed/main\.py does not exist"):
        load_task(folder)
    (Path(folder) / "seed" / "main.py").write_text("def run():\n    return {}\n")
    assert load_task(folder).spec.code_file == "main.py"


def test_a_seed_is_read_by_the_genome_folder_rule(tmp_path):
    folder = Path(_task(tmp_path, HOSTILE, lambda t: t))
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's file")
    (folder / "seed" / "link.py").symlink_to(secret)
    with pytest.raises(TaskError, match=r"seed: .*holds a symbolic link, 'link\.py'"):
        load_task(str(folder)).seed_files()
    (folder / "seed" / "link.py").unlink()
    (folder / "seed" / "back\\slash.py").write_text("x = 1\n")
    with pytest.raises(TaskError, match=r"seed: .*back\\\\slash\.py.*backslash"):
        load_task(str(folder)).seed_files()


def test_an_unknown_task_names_where_it_looked(tmp_path, monkeypatch):
    """A relative task path is the current folder's, not a campaign file's: the error shows the path tried."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError) as err:
        load_task("./mytask")
    assert str(tmp_path / "mytask" / "task.toml") in str(err.value) and "maze" in str(err.value)
