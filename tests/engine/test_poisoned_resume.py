"""A campaign whose store holds poisoned children (stored ``mutated`` the way the old driver left them:
their evaluation crashed it before anything was recorded) resumes and finishes; an error in the
driver's own loop marks the run ``failed`` instead of leaving it ``running``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import toy

from archive_db import ArchiveDB, Outcome, Proposal
from openended.config import load_config
from openended.engine import Campaign, run_campaign

HOSTILE = Path(__file__).resolve().parents[1] / "tasks" / "hostile"


def _child(result: str) -> dict[str, bytes]:
    return {"child.py": f"def run():\n    return {result}\n".encode()}


POISONS = {
    1: _child('{"fitness": 10**400, "descriptors": [0.5, 0.5]}'),
    2: _child('{"fitness": 0.5, "descriptors": [10**400, 0.5]}'),
    3: _child('{"fitness": 0.25, "descriptors": [0.25, 0.25], "feedback": "bad \\ud800 text"}'),
    4: _child('{"fitness": 0.5, "descriptors": [0.5, 0.5], "metrics": {"m": "\\ud800"}}'),
    5: _child('{"fitness": 0.5, "descriptors": [0.5, 0.5], "metrics": {"d": eval("[" * 100 + "]" * 100)}}'),
    6: _child('{"fitness": 1.7e308, "descriptors": [0.05, 0.05]}'),
    7: _child('{"fitness": 1.7e308, "descriptors": [0.95, 0.95]}'),
}


def test_a_store_with_poisoned_mutated_children_resumes_and_finishes(tmp_path, ray_address):
    db_path = tmp_path / "c.db"
    settings = {"db": str(db_path), "sandbox.kind": "inprocess", "max_in_flight": 1}
    first = run_campaign(load_config(None, {**settings, "task": str(HOSTILE), "budget.max_children": 1}))
    assert first.children_done == 1
    with ArchiveDB(db_path) as db, db.transaction():
        db.propose([Proposal(i, 0, "llm_rewrite", i) for i in POISONS])
        db.record([Outcome(i, "mutated", files=files) for i, files in POISONS.items()])
    summary = run_campaign(load_config(None, {**settings, "budget.max_children": 1 + len(POISONS)}))
    assert summary.status == "finished" and summary.children_pending == 0
    with ArchiveDB(db_path, readonly=True) as db:
        rows = {i: db.agent(i) for i in POISONS}
        assert not db.agents_by_status("mutated") and not db.agents_by_status("proposed")
    for i in (1, 2, 4, 5):
        assert (rows[i]["status"], rows[i]["fail_stage"]) == ("failed", "invalid"), rows[i]
    assert "fitness is an integer" in rows[1]["fail_reason"]
    assert "descriptors[0] is an integer" in rows[2]["fail_reason"]
    assert "lone surrogate" in rows[4]["fail_reason"]
    assert "nested deeper" in rows[5]["fail_reason"]
    assert rows[3]["status"] == "archived" and rows[3]["feedback"] == "bad \ufffd text"
    # near the largest double: refused above the task's upper bound where the campaign passes it to
    # the recorder, else archived without overflowing the QD score
    assert all(rows[i]["status"] in ("archived", "failed") for i in (6, 7))
    assert summary.qd_score is not None


def test_an_error_in_the_driver_loop_marks_the_run_failed(tmp_path, ray_address, monkeypatch):
    config = load_config(None, {"task": toy("plain"), "db": str(tmp_path / "c.db"), "budget.max_children": 8,
                                "sandbox.kind": "inprocess"})

    def broken_loop(self, dispatcher):
        raise RuntimeError("the driver's own bug\nits last line")

    monkeypatch.setattr(Campaign, "_loop", broken_loop)
    with pytest.raises(RuntimeError, match="its last line"):
        run_campaign(config)
    with ArchiveDB(tmp_path / "c.db", readonly=True) as db:
        run = db.get_run()
    assert run["status"] == "failed"
    assert run["state"]["last_error"] == "RuntimeError: its last line"
