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


def test_eta_text_is_unknown_when_absurd_and_hours_when_large():
    from openended.progress import eta_text

    assert [eta_text(v) for v in (None, float("nan"), float("inf"), -1.0, 21200251854141.0, 31 * 86400.0)] == ["?"] * 6
    assert [eta_text(v) for v in (0.2, 42.0, 754.0, 3599.6, 11520.0, 29 * 86400.0)] == [
        "0s", "42s", "12m 34s", "1h 00m", "3h 12m", "696h 00m"]


def _slow_campaign_lines(monkeypatch, capsys, max_children: int) -> list[str]:
    """Progress lines of a model-driven campaign: a child finishes every 30 s, an update comes every 2 s."""
    import openended.progress as progress_module

    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress(title="t", live=False, log_every_seconds=0)
    for t in range(0, 602, 2):
        clock[0] = 1000.0 + t
        done = t // 30
        progress.update(replace(SNAP, children_done=done, children_failed=0, max_children=max_children))
    return capsys.readouterr().out.splitlines()


def test_eta_of_a_slow_model_driven_campaign(monkeypatch, capsys):
    """The smoothed rate decays towards 0 between slow children (the issue's `ETA 21200251854141s`);
    the ETA uses the session's mean rate: 20 children in 600 s, 180 to go."""
    lines = _slow_campaign_lines(monkeypatch, capsys, max_children=200)
    assert lines[0].endswith("ETA ?")  # nothing finished yet in this session
    assert lines[-1].endswith("ETA 1h 30m")
    etas = [line.rsplit("ETA ", 1)[1] for line in lines]
    assert all(e == "?" or e[0].isdigit() and len(e) <= 8 for e in etas), sorted(set(etas))
    lines = _slow_campaign_lines(monkeypatch, capsys, max_children=100_000)
    assert lines[-1].endswith("ETA ?")  # 100,000 children at 2 a minute: no estimate worth showing
