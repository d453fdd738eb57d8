"""The recorder brings the store's lineage snapshot up to date as a campaign runs (every SNAPSHOT_EVERY
outcomes), and a resume reads the same lineage counts from it as the scans give (archive_db.lineage)."""

from __future__ import annotations

import numpy as np
from conftest import toy

import archive_db.lineage
import openended.engine.recorder as recorder
from archive_db import ArchiveDB
from openended.config import load_config
from openended.engine import Campaign


def dense(counts: dict[int, int], n: int) -> list[int]:
    out = [0] * n
    for k, v in counts.items():
        out[k] = v
    return out


def test_a_running_campaign_keeps_the_snapshot_and_a_resume_reads_it(tmp_path, ray_address, monkeypatch):
    monkeypatch.setattr(recorder, "SNAPSHOT_EVERY", 8)
    monkeypatch.setattr(archive_db.lineage, "REFRESH_AFTER", 4)
    db = tmp_path / "c.db"
    overrides = {"task": toy(), "db": str(db), "budget.max_children": 40, "sandbox.kind": "inprocess",
                 "ray_address": ray_address, "batch_size": 4}
    assert Campaign(load_config(None, overrides)).run().status == "finished"
    with ArchiveDB(db, readonly=True) as store:
        row = store.conn.execute("SELECT next_id FROM lineage_snapshot").fetchone()
        assert row is not None and row[0] > 8, "the recorder wrote a snapshot while the campaign ran"
    resumed = Campaign(load_config(None, {**overrides, "budget.max_children": 60}))
    try:
        n = resumed.db.next_agent_id()
        assert resumed.lineage.children(np.arange(n)).tolist() == dense(resumed.db.children_counts(), n)
        assert resumed.lineage.discoveries(np.arange(n)).tolist() == dense(resumed.db.discovery_counts(), n)
        assert resumed.run().status == "finished"
    finally:
        resumed.close()
