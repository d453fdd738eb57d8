"""The campaign loop through real Ray and a real SQLite store, on the toy task."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import toy

from openended.config import ConfigError, load_config
from openended.engine import Campaign, run_campaign


def _config(tmp_path, variant="plain", **overrides):
    base = {"task": toy(variant), "db": str(tmp_path / "c.db"), "budget.max_children": 60, "max_in_flight": 2,
            "batch_size": 4, "archive.kind": "grid", "selection.strategy": "uniform", "sandbox.kind": "inprocess"}
    base.update(overrides)
    return load_config(None, base)


def _rows(db_path):
    con = sqlite3.connect(db_path)
    try:
        return con.execute(
            "SELECT id, parent_id, operator, seed, status, genome_hash, fitness, fail_stage FROM agents ORDER BY id"
        ).fetchall()
    finally:
        con.close()


def test_budget_stops_at_exact_count(tmp_path, ray_address):
    summary = run_campaign(_config(tmp_path, **{"budget.max_children": 37}))
    rows = _rows(tmp_path / "c.db")
    assert [r[0] for r in rows] == list(range(37))
    assert summary.status == "finished" and summary.stop_reason == "children budget"
    assert all(r[4] in ("archived", "rejected") for r in rows)
    assert summary.children_done == 37 and summary.children_pending == 0
    # roots: the seed agent and the task's three random genomes; everyone else has a parent
    assert [r[2] for r in rows[:4]] == ["seed", "random", "random", "random"]
    assert all(r[1] is not None and r[2] == "gaussian" for r in rows[4:])


def test_target_fitness_stops_early(tmp_path, ray_address):
    summary = run_campaign(_config(tmp_path, "target", **{"budget.max_children": 5000, "archive.kind": "grid",
                                                          "selection.strategy": "fitness"}))
    assert summary.stop_reason == "target fitness reached"
    assert summary.best_fitness >= -0.3
    assert len(_rows(tmp_path / "c.db")) < 5000


def test_same_seed_same_store_with_one_in_flight(tmp_path, ray_address):
    stores = []
    for name in ("a", "b"):
        cfg = _config(tmp_path, **{"db": str(tmp_path / f"{name}.db"), "max_in_flight": 1, "budget.max_children": 80,
                                  "archive.kind": "novelty", "selection.strategy": "curiosity"})
        run_campaign(cfg)
        stores.append(_rows(tmp_path / f"{name}.db"))
    assert stores[0] == stores[1]
    assert len({r[5] for r in stores[0]}) > 40  # genomes really differ from child to child


def test_other_seed_other_campaign(tmp_path, ray_address):
    run_campaign(_config(tmp_path, **{"db": str(tmp_path / "a.db"), "seed": 1}))
    run_campaign(_config(tmp_path, **{"db": str(tmp_path / "b.db"), "seed": 2}))
    assert [r[5] for r in _rows(tmp_path / "a.db")][1:] != [r[5] for r in _rows(tmp_path / "b.db")][1:]


def test_crashing_worker_fails_only_that_child(tmp_path, ray_address):
    summary = run_campaign(_config(tmp_path, "crashy", **{"budget.max_children": 60}))
    rows = _rows(tmp_path / "c.db")
    failed = [r for r in rows if r[4] == "failed"]
    assert failed, "some children cross x > 1.2 and kill their worker"
    assert all(r[7] == "sandbox" for r in failed)
    assert sum(r[4] in ("archived", "rejected") for r in rows) > len(failed)
    assert summary.status == "finished" and len(rows) == 60
    con = sqlite3.connect(tmp_path / "c.db")
    reasons = [r[0] for r in con.execute("SELECT fail_reason FROM agents WHERE status='failed'")]
    assert all("worker" in reason for reason in reasons)


def test_hanging_child_times_out(tmp_path, ray_address):
    cfg = _config(tmp_path, "hangy", **{"budget.max_children": 12, "batch_size": 1})
    cfg.task_timeout_seconds = 2.0
    cfg.mutation.params = {"sigma": 2.0}
    summary = run_campaign(cfg)
    rows = _rows(tmp_path / "c.db")
    assert any(r[7] == "timeout" for r in rows)
    assert summary.status == "finished" and all(r[4] != "proposed" for r in rows)


def test_resume_refuses_a_different_task(tmp_path, ray_address):
    run_campaign(_config(tmp_path, **{"budget.max_children": 10}))
    with pytest.raises(ConfigError, match="task"):
        Campaign(_config(tmp_path, "slow"))


def test_resume_with_larger_budget_continues(tmp_path, ray_address):
    run_campaign(_config(tmp_path, **{"budget.max_children": 20}))
    summary = run_campaign(load_config(None, {"db": str(tmp_path / "c.db"), "budget.max_children": 45,
                                              "sandbox.kind": "inprocess"}))
    rows = _rows(tmp_path / "c.db")
    assert [r[0] for r in rows] == list(range(45))
    assert summary.children_done == 45


def test_wall_time_budget_stops_and_counts_across_resume(tmp_path, ray_address):
    cfg = _config(tmp_path, "slow", **{"budget.max_children": 100_000, "budget.max_wall_seconds": 1.5, "batch_size": 2})
    first = run_campaign(cfg)
    assert first.stop_reason == "wall-time budget"
    n_first = len(_rows(tmp_path / "c.db"))
    assert 2 < n_first < 100_000
    # The budget is spent: a resume with the same wall-time budget dispatches nothing new.
    again = run_campaign(load_config(None, {"db": str(tmp_path / "c.db"), "sandbox.kind": "inprocess"}))
    assert again.stop_reason == "wall-time budget"
    assert len(_rows(tmp_path / "c.db")) == n_first


def test_maze_campaign_records_positions_and_solved_metric(tmp_path, ray_address):
    cfg = load_config(None, {"task": "maze-medium", "db": str(tmp_path / "m.db"), "budget.max_children": 600,
                             "sandbox.kind": "inprocess",
                             "archive.kind": "grid", "selection.strategy": "curiosity"})
    summary = run_campaign(cfg)
    assert summary.children_done == 600 and summary.children_failed == 0
    con = sqlite3.connect(tmp_path / "m.db")
    rows = con.execute("SELECT fitness, descriptors, feedback FROM agents").fetchall()
    import json
    for fitness, descriptors, feedback in rows:
        x, y = json.loads(descriptors)
        assert 5 <= x <= 295 and 5 <= y <= 135
        assert (feedback != "") == (fitness > -5)  # the maze's feedback says only that a child solved it
    assert summary.archive_size > 20 and summary.coverage > 0.05


def test_resume_accepts_the_same_nested_settings_and_refuses_others(tmp_path, ray_address):
    run_campaign(_config(tmp_path, **{"budget.max_children": 10}))
    Campaign(_config(tmp_path, **{"budget.max_children": 20})).close()  # same archive/selection: fine
    with pytest.raises(ConfigError, match="archive"):
        Campaign(_config(tmp_path, **{"archive.kind": "novelty"}))


def test_resume_sends_mutated_children_straight_to_evaluation(tmp_path, ray_address):
    from archive_db import ArchiveDB, Outcome, Proposal

    run_campaign(_config(tmp_path, **{"budget.max_children": 10}))
    # A child whose mutation was recorded before the driver died: its genome must be evaluated as is.
    genome = {"weights.npy": _weights(0.75, 0.5)}
    with ArchiveDB(tmp_path / "c.db") as db:
        with db.transaction():
            db.propose([Proposal(10, 3, "gaussian", 99)])
            db.record([Outcome(10, "mutated", files=genome)])
    summary = run_campaign(load_config(None, {"db": str(tmp_path / "c.db"), "budget.max_children": 11,
                                              "sandbox.kind": "inprocess"}))
    assert summary.children_pending == 0
    with ArchiveDB(tmp_path / "c.db", readonly=True) as db:
        child = db.agent(10)
        assert child["status"] in ("archived", "rejected")
        assert child["descriptors"] == [0.75, 0.5]
        assert db.agent_files(10) == genome


def _weights(*values) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array(values, dtype=np.float64))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["grid", "cvt", "novelty", "all"])
def test_archive_rebuilt_from_the_store_equals_the_live_one(tmp_path, ray_address, kind):
    import numpy as np

    from archive_db import ArchiveDB
    from openended.qd import restore_archive

    params = {"cells": 32} if kind == "cvt" else {"threshold": 0.5} if kind == "novelty" else {}
    campaign = Campaign(_config(tmp_path, **{"budget.max_children": 150, "archive.kind": kind,
                                             "archive.params": params}))
    campaign.run()
    live = campaign.archive
    with ArchiveDB(tmp_path / "c.db", readonly=True) as db:
        run = db.get_run()
        rebuilt = restore_archive(schema=run["descriptor_schema"], state=run["state"]["archive"], elites=db.elites())
    assert live.size > 5
    for key, values in live.members().items():
        np.testing.assert_array_equal(rebuilt.members()[key], values)
    assert rebuilt.stats() == live.stats()


def test_store_refuses_descriptors_of_the_wrong_length_for_a_campaign_schema(tmp_path, ray_address):
    from archive_db import ArchiveDB, InvalidValueError, Outcome, Proposal

    run_campaign(_config(tmp_path, **{"budget.max_children": 5}))
    with ArchiveDB(tmp_path / "c.db") as db:
        db.propose([Proposal(5, 0, "gaussian", 1)])
        with pytest.raises(InvalidValueError, match="length"):
            db.record([Outcome(5, "archived", files={"weights.npy": b"x"}, fitness=0.0, descriptors=[0.0, 0.0, 0.0])])
        assert db.agent(5)["status"] == "proposed"


def test_broken_evaluator_fails_children_with_a_reason_and_the_campaign_ends(tmp_path, ray_address):
    import shutil

    from conftest import TOY

    task = tmp_path / "broken"
    shutil.copytree(TOY, task)
    (task / "evaluate.py").write_text("def evaluate_batch(genomes, args)\n    return []\n")  # a SyntaxError
    cfg = load_config(None, {"task": f"{task}:plain", "db": str(tmp_path / "b.db"), "budget.max_children": 50,
                             "sandbox.kind": "inprocess"})
    summary = run_campaign(cfg)
    assert summary.status == "failed" and summary.stop_reason == "every root agent failed"
    con = sqlite3.connect(tmp_path / "b.db")
    rows = con.execute("SELECT status, fail_stage, fail_reason FROM agents").fetchall()
    assert len(rows) == 4  # the seed agent and three random roots; nothing to select parents from
    assert all(r[0] == "failed" and r[1] == "evaluation" and "SyntaxError" in r[2] for r in rows)


def test_resume_needs_an_existing_campaign_and_never_inherits_the_ray_address(tmp_path, ray_address):
    from archive_db import ArchiveDB

    with pytest.raises(ConfigError, match="no such campaign database"):
        Campaign(load_config(None, {"db": str(tmp_path / "none.db")}), resume_only=True)
    ArchiveDB(tmp_path / "empty.db").close()
    with pytest.raises(ConfigError, match="holds no campaign"):
        Campaign(load_config(None, {"db": str(tmp_path / "empty.db")}), resume_only=True)
    # A campaign started against a cluster resumes on a local Ray unless told otherwise.
    run_campaign(_config(tmp_path, **{"budget.max_children": 10, "ray_address": ray_address}))
    resumed = Campaign(load_config(None, {"db": str(tmp_path / "c.db"), "sandbox.kind": "inprocess"}), resume_only=True)
    assert resumed.config.ray_address is None
    resumed.close()


def test_a_campaign_stored_with_the_removed_model_weight_still_resumes(tmp_path):
    """`weight` was documented for [[llm.models]] but never read; configs stored with it must still resume."""
    import json

    model = {"name": "m", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    cfg = load_config(None, {"task": "binpack", "db": str(tmp_path / "w.db"), "llm.models": [model],
                             "sandbox.kind": "inprocess"})
    Campaign(cfg).close()
    con = sqlite3.connect(tmp_path / "w.db")
    stored = json.loads(con.execute("SELECT config FROM runs").fetchone()[0])
    stored["llm"]["models"][0]["weight"] = 1.0
    con.execute("UPDATE runs SET config = ?", (json.dumps(stored),))
    con.commit()
    con.close()
    resumed = Campaign(load_config(None, {"db": str(tmp_path / "w.db")}), resume_only=True)
    assert [m.name for m in resumed.config.llm.models] == ["m"]
    resumed.close()
