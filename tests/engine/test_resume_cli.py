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

    code, out, err = cli("resume", db, "--budget", 20, "--quiet", "--max-in-flight", 1, "--batch-size", 2,
                         "--grace-seconds", 3, "--max-seconds", 3600, "--max-tokens", 1000)
    assert code == 0, out + err
    status = json.loads(cli("status", db, "--json")[1])
    assert status["max_children"] == 20 and status["children_done"] + status["children_failed"] == 20
    stored = _run_row(db)[2]
    assert stored["budget"]["max_children"] == 20 and stored["max_in_flight"] == 1 and stored["batch_size"] == 2
    assert stored["grace_seconds"] == 3 and stored["budget"]["max_wall_seconds"] == 3600
    assert stored["budget"]["max_tokens"] == 1000
    # a later resume without --budget keeps the raised budget; with nothing left to do it never reaches
    # for Ray (here an address where no cluster answers)
    code, out, err = cli("resume", db, "--quiet", "--ray-address", "127.0.0.1:9")
    assert code == 0 and out.startswith("nothing to do:") and "(children budget; 20 children finished)" in out, \
        out + err
    assert json.loads(cli("status", db, "--json")[1])["max_children"] == 20

    before = _run_row(db)
    for budget in (20, 15):  # at, then below, the 20 children already finished
        code, out, err = cli("resume", db, "--budget", budget)
        assert code == 2 and out == ""
        assert f"--budget {budget} (budget.max_children) is not above the 20 children this campaign has " \
               "already finished; give a larger one" in err
        assert str(db) in err
    code, _, err = cli("resume", db, "--max-seconds", 0.001)
    assert code == 2 and "--max-seconds 0.001 (budget.max_wall_seconds) is not above the" in err
    assert "seconds this campaign has already run; give a larger one" in err
    code, _, err = cli("run", "--db", db, "--budget", 20)  # `run` on an existing database resumes it: the same
    assert code == 2 and "--budget 20 (budget.max_children) is not above the 20 children" in err
    assert _run_row(db) == before  # refused before anything was written


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_resume_help_lists_what_may_change_on_resume():
    text = _help("resume")
    for option, words in [("--budget", "children budget"), ("--max-seconds", "wall-time budget"),
                          ("--max-tokens", "token budget"), ("--max-in-flight", "Ray tasks out at once"),
                          ("--batch-size", "children per Ray task"), ("--grace-seconds", "SIGINT/SIGTERM"),
                          ("--ray-address", "Ray cluster"), ("--sandbox", "where children are evaluated"),
                          ("--quiet", "plain log lines")]:
        (line,) = [line for line in text.splitlines() if f" {option} " in line]
        assert words in line, line


def test_help_shows_no_python_type_names():
    """typer prints <int>, <bool>, <list[str]> for values (and <bool> beside --help) unless told otherwise."""
    import re

    import typer.main

    group = typer.main.get_command(app)
    commands = [(name,) for name in group.commands if name != "sandbox"]
    commands += [("sandbox",), ("sandbox", "build"), ("sandbox", "check"), ()]
    assert ("compare",) in commands and ("plot",) in commands and ("query",) in commands
    for command in commands:
        text = _help(*command)
        assert "--help" in text
        found = re.findall(r"<[a-z][a-z_\[\], |]*>", text)
        assert not found, (command, found)


def test_a_campaign_that_reached_its_target_searches_on_with_no_stop_at_target(tmp_path, ray_address):
    """What run.py prints after the Quick start: a resume of a campaign that ended at its target only added
    children once the target stopped ending it."""
    db = tmp_path / "t.db"
    code, out, err = cli("run", "--task", toy("target"), "--db", db, "--budget", 3000, "--sandbox", "inprocess",
                         "--quiet")
    assert code == 0 and "target fitness reached" in out, out + err
    done = json.loads(cli("status", db, "--json")[1])["children_done"]
    assert done < 3000
    code, out, err = cli("resume", db, "--budget", 3000, "--quiet")
    assert code == 0 and json.loads(cli("status", db, "--json")[1])["children_done"] == done, out + err
    # its budget is not spent: the target alone ends it
    assert "(target fitness reached;" in out and "resume it with --no-stop-at-target: openended resume" in out, out
    code, out, err = cli("resume", db, "--budget", done + 40, "--no-stop-at-target", "--quiet")
    assert code == 0 and "finished (children budget)" in out, out + err
    status = json.loads(cli("status", db, "--json")[1])
    assert status["children_done"] + status["children_failed"] == done + 40
    assert status["stop_reason"] == "children budget"  # the latest session's, not the first's (target reached)
    assert "stop reason" in cli("status", db)[1]
    assert _run_row(db)[2]["budget"]["stop_at_target"] is False


def test_a_campaign_with_nothing_left_to_do_says_how_to_go_on_without_a_session(tmp_path, ray_address):
    db = tmp_path / "done.db"
    assert cli("run", "--task", toy(), "--db", db, "--budget", 12, "--sandbox", "inprocess", "--quiet")[0] == 0
    before = json.loads(cli("status", db, "--json")[1])
    for command in (("resume", db), ("run", "--task", toy(), "--db", db, "--sandbox", "inprocess")):
        code, out, err = cli(*command)
        assert code == 0, out + err
        assert out.startswith(f"nothing to do: the campaign in {db} has stopped (children budget; 12 children "
                              "finished); to go on, resume it with --budget N above"), out
    after = json.loads(cli("status", db, "--json")[1])
    assert {k: after[k] for k in ("status", "stop_reason", "children_done", "children_failed", "best_fitness")} == \
        {k: before[k] for k in ("status", "stop_reason", "children_done", "children_failed", "best_fitness")}


def test_status_says_when_its_coverage_was_measured_if_children_finished_since(tmp_path, ray_address):
    """After a kill -9 the latest stats row can lag the agents: status showed its coverage and QD score beside
    the live counts without saying so."""
    db = tmp_path / "s.db"
    code, out, err = cli("run", "--task", toy(), "--db", db, "--budget", 12, "--sandbox", "inprocess", "--quiet")
    assert code == 0, out + err
    status = json.loads(cli("status", db, "--json")[1])
    assert status["stats_at_children"] == 12 and status["children_in_flight"] == 0
    assert "measured at" not in cli("status", db)[1]
    con = sqlite3.connect(db)
    con.execute("INSERT INTO stats(at, children_done, children_failed, coverage, qd_score) VALUES (0, 5, 0, 0.1, 2)")
    con.commit()
    con.close()
    code, out, _ = cli("status", db)
    assert code == 0 and json.loads(cli("status", db, "--json")[1])["stats_at_children"] == 5
    assert out.count("(measured at 5 children)") == 2, out


def test_run_takes_the_target_and_grace_flags_resume_takes(tmp_path, ray_address):
    """`run --no-stop-at-target` searches on past the task's target from the start, and `--grace-seconds` is
    stored as `resume --grace-seconds` is (both were config-only for `run`)."""
    db = tmp_path / "past.db"
    code, out, err = cli("run", "--task", toy("target"), "--db", db, "--budget", 600, "--sandbox", "inprocess",
                         "--no-stop-at-target", "--grace-seconds", 2.5, "--quiet")
    assert code == 0 and "finished (children budget)" in out, out + err
    status = json.loads(cli("status", db, "--json")[1])
    assert status["children_done"] + status["children_failed"] == 600
    config = _run_row(db)[2]
    assert config["budget"]["stop_at_target"] is False and config["grace_seconds"] == 2.5
    # the same campaign with the target on stops early: the flag is what let it go on
    code, out, err = cli("run", "--task", toy("target"), "--db", tmp_path / "stops.db", "--budget", 600,
                         "--sandbox", "inprocess", "--quiet")
    assert code == 0 and "target fitness reached" in out, out + err
