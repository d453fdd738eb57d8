"""The DGM comparison configurations (``openended run --dgm NAME``): what each sets; bad names refused."""

from __future__ import annotations

import subprocess

import pytest

from openended.config import load_config
from openended.dgm import DGM_CONFIGURATIONS, dgm_overrides


@pytest.mark.parametrize("name, strategy, editor", [("full", "score_child", "parent"),
                                                    ("no_selfimprove", "score_child", "seed"),
                                                    ("no_darwin", "latest", "parent"), ("clade", "clade", "parent")])
def test_each_configuration_is_a_valid_campaign(name, strategy, editor):
    config = load_config(None, {**dgm_overrides(name), "task": "coding-agent-tiny"})
    assert config.selection.strategy == strategy and config.mutation.operator == "self_improve"
    assert config.mutation.params.get("editor", "parent") == editor
    assert config.archive.kind == "all"
    assert set(DGM_CONFIGURATIONS) == {"full", "no_selfimprove", "no_darwin", "clade"}


def test_a_bad_name_or_editor_is_refused_naming_it(python, cli_env, tmp_path):
    proc = subprocess.run([python, "-m", "openended", "run", "--dgm", "no_such", "--db", str(tmp_path / "x.db")],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown DGM configuration 'no_such'" in proc.stderr
    assert "no_selfimprove" in proc.stderr
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(Exception, match="self_improve editor must be one of parent, seed, got 'child'"):
        load_config(None, {"mutation.operator": "self_improve", "mutation.params.editor": "child"})


def test_the_diagnosis_shows_the_entry_point_first_and_stays_within_its_size():
    from openended.mutation.self_improve import shown_files

    files = {"a_tools.py": b"x = 1\n" * 5000, "agent.py": b"def solve(workspace, statement):\n    pass\n",
             "prompt.txt": b"Be careful.\n"}
    text = shown_files(files, "agent.py", chars=2000)
    assert text.index("--- agent.py ---") < text.index("--- a_tools.py ---")
    assert "def solve(workspace, statement)" in text
    assert "more characters of a_tools.py not shown" in text and len(text) < 2000 + 400
    assert shown_files(files, "agent.py", chars=10**6).count("x = 1") == 5000


def test_a_missing_editor_never_lets_the_parent_edit_itself():
    from openended.mutation.self_improve import SelfImproveFailed, self_edit
    from openended.sandbox.spec import SandboxSpec
    from openended.tasks import load_task

    task = load_task("coding-agent-tiny")
    with pytest.raises(SelfImproveFailed, match="has no stored genome"):
        self_edit(task, task.seed_files(), "Improve it.", SandboxSpec(kind="process"), "/tmp/no-socket", {},
                  editor={})
