"""`openended resume` as a user runs it (issue 15): a budget given on resume is stored, so `status` shows
it; a budget the campaign has already spent is an error naming both numbers, given before Ray starts."""

from __future__ import annotations

import json
import sqlite3

from conftest import toy
from typer.testing import CliRunner

from openended.cli import app


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _run_row(db) -> tuple[str, float, dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        status, updated_at, config = con.execute("SELECT status, updated_at, config FROM runs").fetchone()
    finally:
        con.close()
    return status, updated_at, json.loads(config)


def test_resume_budget_is_stored_and_a_spent_one_is_refused(tmp_path, ray_address):
    db = tmp_path / "c.db"
    code, out, err = cli("run", "--task", toy(), "--db", db, "--budget", 12, "--sandbox", "inprocess", "--quiet")
    assert code == 0, out + err
    status = json.loads(cli("status", db, "--json")[1])
    assert (status["max_children"], status["children_done"] + status["children_failed"]) == (12, 12)

    code, out, err = cli("resume", db, "--budget", 20, "--quiet", "--max-in-flight", 1)
    assert code == 0, out + err
    status = json.loads(cli("status", db, "--json")[1])
    assert status["max_children"] == 20 and status["children_done"] + status["children_failed"] == 20
    stored = _run_row(db)[2]
    assert stored["budget"]["max_children"] == 20 and stored["max_in_flight"] == 1
    # a later resume without --budget keeps the raised budget
    code, out, err = cli("resume", db, "--quiet")
    assert code == 0 and "finished (children budget)" in out, out + err
    assert json.loads(cli("status", db, "--json")[1])["max_children"] == 20

    before = _run_row(db)
    for budget in (20, 15):  # at, then below, the 20 children already finished
        code, out, err = cli("resume", db, "--budget", budget)
        assert code == 2 and out == ""
        assert f"--budget {budget} (budget.max_children) is not above the 20 children this campaign has " \
               "already finished; give a larger one" in err
        assert str(db) in err
    code, _, err = cli("run", "--db", db, "--budget", 20)  # `run` on an existing database resumes it: the same
    assert code == 2 and "--budget 20 (budget.max_children) is not above the 20 children" in err
    assert _run_row(db) == before  # refused before anything was written
