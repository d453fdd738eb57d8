"""run.py, the Quick start's first command: with options it is `openended run` with them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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


def test_run_starts_its_own_ray_despite_a_dead_cluster_recorded_on_the_machine(tmp_path, cli_env, python):
    # `ray start` records its cluster in <temp>/ray/ray_current_cluster and a bare ray.init() joins it,
    # even after that cluster died. A campaign without --ray-address must start its own Ray instead.
    import tempfile
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    (Path(ray_tmp) / "ray").mkdir()
    (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # nothing listens there
    env = cli_env | {"RAY_TMPDIR": ray_tmp}  # cli_env has no RAY_ADDRESS
    db = tmp_path / "toy.db"
    try:
        out = subprocess.run([python, str(ROOT / "run.py"), "run", "--task", f"{TOY}:plain", "--db", str(db),
                              "--budget", "4", "--sandbox", "inprocess", "--quiet"], env=env, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 done" in out.stdout.strip().splitlines()[-1]
