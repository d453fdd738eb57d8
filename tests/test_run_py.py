"""run.py, the Quick start's first command: with options it is `openended run` with them."""

from __future__ import annotations

import subprocess

from conftest import ROOT, TOY


def test_run_py_help_shows_the_options_of_run(cli_env, python):
    out = subprocess.run([python, str(ROOT / "run.py"), "--help"], env=cli_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--budget" in out.stdout and "--selection" in out.stdout and "--task" in out.stdout


def test_run_py_passes_its_options_to_run(tmp_path, cli_env, python):
    db = tmp_path / "toy.db"
    out = subprocess.run([python, str(ROOT / "run.py"), "run", "--task", f"{TOY}:plain", "--db", str(db), "--budget",
                          "4", "--sandbox", "inprocess", "--quiet"], env=cli_env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert db.exists() and "4 done" in out.stdout.strip().splitlines()[-1]
