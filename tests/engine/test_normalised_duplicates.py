"""Duplicates up to formatting in a real campaign: the ast operator on a program whose given root is written
with comments and odd spacing makes children that differ from it only in layout; they are recorded as its
duplicates, unevaluated, and a campaign killed with -9 and resumed has exactly the same duplicates."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from conftest import ROOT, count_in, kill_when, resume_cli

TOYCODE = ROOT / "tests" / "tasks" / "toycode"
# agent.py of the seed with b = 3, restyled: the ast operator often writes the same program in its own style
GIVEN = "a = 1\nb  =  3   # three, not two\n\nif a<b :\n    # move a\n    a = (a + 1)\n"
COLUMNS = "id, parent_id, operator, seed, status, genome_hash, fitness, duplicate_of, eval_seconds IS NULL"


def _config(tmp_path: Path, db: Path, ray_address: str) -> Path:
    given = tmp_path / "given"
    given.mkdir(exist_ok=True)
    (given / "agent.py").write_text(GIVEN)
    path = tmp_path / f"{db.stem}.toml"
    path.write_text(f"""
task = "{TOYCODE}"
db = "{db}"
seed = 3
max_in_flight = 2
batch_size = 8
staleness = 16
ray_address = "{ray_address}"
[sandbox]
kind = "inprocess"
[mutation]
operator = "ast"
initial_agents = ["{given}"]
[budget]
max_children = 400
""")
    return path


def _cli(python, env, config: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([python, "-m", "openended", "run", str(config), "--quiet", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT {COLUMNS} FROM agents ORDER BY id").fetchall()
    finally:
        con.close()


def _finished(db: Path) -> int:
    return count_in(db, "SELECT COUNT(*) FROM agents WHERE finished_at IS NOT NULL")

def test_restyled_duplicates_are_not_evaluated_and_survive_kill_9(tmp_path, ray_address, python, cli_env):
    ref = tmp_path / "ref.db"
    proc = _cli(python, cli_env, _config(tmp_path, ref, ray_address))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    rows = _rows(ref)
    assert len(rows) == 400
    by_id = {r[0]: r for r in rows}
    restyled = [r for r in rows if r[7] is not None and r[5] != by_id[r[7]][5]]
    assert len(restyled) >= 5, "the test needs duplicates that differ from their first in text"
    assert all(r[7] == 1 for r in restyled), "the given root is the only genome written in another style"
    for r in (r for r in rows if r[7] is not None):
        assert r[8], f"duplicate {r[0]} was evaluated"
        assert r[6] == by_id[r[7]][6], "a duplicate takes the fitness of the agent it duplicates"

    db = tmp_path / "killed.db"
    config = _config(tmp_path, db, ray_address)
    for target in (100, 200):
        kill_when(_cli(python, cli_env, config), lambda: _finished(db), target)
    resume_cli(python, cli_env, db, ray_address)
    assert _rows(db) == rows
