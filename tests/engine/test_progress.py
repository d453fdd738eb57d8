"""Progress output: plain lines off a terminal, a rich table on one."""

import io
from dataclasses import replace

from rich.console import Console

from openended.progress import Progress
from openended.standing import Standing

SNAP = Standing(children_done=90, children_failed=10, children_in_flight=4, children_proposed=104,
                max_children=200, archive_size=50, coverage=0.25, qd_score=12.5, best_fitness=-3.0,
                mean_fitness=-7.0, elapsed_seconds=10.0)


def test_plain_lines_when_not_a_terminal(capsys):
    progress = Progress(title="t", live=False, log_every_seconds=0)
    progress.update(SNAP)
    line = capsys.readouterr().out.strip()
    assert line.startswith("[t] done 90 failed 10 in-flight 4")
    assert "archive 50" in line and "coverage 25.0%" in line and "best -3" in line
    assert "ETA " in line and "n/as" not in line


def test_live_table_shows_counts_rate_and_eta():
    progress = Progress(title="t", live=True)
    progress.console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress:
        progress.update(SNAP)
        progress.update(replace(SNAP, children_done=140))
    text = progress.console.file.getvalue()
    assert "140 / 10 / 4" in text and "104 / 200" in text and "25.0%" in text
    assert "ETA (budget)" in text


def test_the_summary_line_never_prints_minus_zero():
    from openended.standing import Summary

    summary = Summary(**{**SNAP.as_dict(), "best_fitness": -0.0, "qd_score": -0.0}, db_path="c.db", status="finished",
                      stop_reason="target", children_pending=0, seconds=1.0)
    line = summary.line()
    assert "best fitness 0," in line and "QD score 0," in line and "-0" not in line
