"""The lineage snapshot (migration 0009, archive_db.lineage): ``ArchiveDB.lineage_counts`` equals the
children_counts and discovery_counts queries after any sequence of proposals and outcomes, with snapshots
taken at any point between them, read-only or not; an older database upgrades."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archive_db.lineage as lineage
from archive_db import ArchiveDB, Outcome, Proposal

SCHEMA = {"names": ["x"]}


def dense(counts: dict[int, int], n: int) -> list[int]:
    out = [0] * n
    for k, v in counts.items():
        out[k] = v
    return out


def check(db: ArchiveDB) -> None:
    children, discoveries = db.lineage_counts()
    n = max(len(children), len(discoveries), db.next_agent_id())
    pad = lambda a: np.concatenate([a, np.zeros(n - len(a), dtype=np.int64)]).tolist()  # noqa: E731
    assert pad(children) == dense(db.children_counts(), n)
    assert pad(discoveries) == dense(db.discovery_counts(), n)


step = st.tuples(st.sampled_from(["new_cell", "improved", "rejected", "failed", "pending", "evaluated_new"]),
                 st.integers(0, 10**6), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=40), refresh_after=st.integers(0, 6))
def test_counts_equal_the_queries_across_snapshots(tmp_path_factory, monkeypatch, steps, refresh_after):
    monkeypatch.setattr(lineage, "REFRESH_AFTER", refresh_after)
    path = tmp_path_factory.mktemp("l") / "c.db"
    db = ArchiveDB(path)
    db.create_run(name="t", task="toy", seed=0, config={}, descriptor_schema=SCHEMA)
    db.propose([Proposal(0, None, "seed", 0)])
    db.record([Outcome(0, "archived", files={"a": b"0"}, fitness=0.0, descriptors=[0.0], archive_event="new_cell")])
    pending: list[int] = []
    for i, (kind, pick, snapshot) in enumerate(steps, start=1):
        db.propose([Proposal(i, pick % i, "op", i)])
        out = {"new_cell": Outcome(i, "archived", files={"a": b"1"}, fitness=1.0, descriptors=[0.1],
                                   archive_event="new_cell"),
               "improved": Outcome(i, "archived", files={"a": b"1"}, fitness=1.0, descriptors=[0.1],
                                   archive_event="improved"),
               "rejected": Outcome(i, "rejected", files={"a": b"1"}, fitness=0.0, descriptors=[0.1]),
               "failed": Outcome(i, "failed", fail_stage="sandbox", fail_reason="x"),
               "evaluated_new": Outcome(i, "evaluated", files={"a": b"1"}, fitness=1.0, descriptors=[0.1],
                                        archive_event="new_cell")}.get(kind)
        if out is not None:
            db.record([out])
        if kind in ("pending", "evaluated_new"):
            pending.append(i)
        if pending and pick % 3 == 0:  # an earlier pending child finishes after later ones
            j = pending.pop(0)
            status = db.agent(j)["status"]
            db.record([Outcome(j, "archived", files=None if status == "evaluated" else {"a": b"2"},
                               fitness=1.0, descriptors=[0.2], archive_event=None if status == "evaluated"
                               else "new_cell")])
        if snapshot:
            check(db)
            with ArchiveDB(path, readonly=True) as ro:
                check(ro)
    check(db)
    db.close()


def test_a_version_8_database_upgrades_and_counts_its_agents(tmp_path, database_at):
    path = tmp_path / "old.db"
    con = database_at(path, 8)
    con.execute("INSERT INTO agents(id, parent_id, operator, seed, created_at, status) VALUES "
                "(0, NULL, 'seed', 0, 0, 'proposed'), (1, 0, 'op', 1, 0, 'proposed'), (2, 0, 'op', 2, 0, 'proposed'), "
                "(3, 2, 'op', 3, 0, 'proposed')")
    con.close()
    with ArchiveDB(path) as db:
        children, discoveries = db.lineage_counts()
        assert children.tolist() == [2, 0, 1] and discoveries.tolist() == []
        check(db)
