"""ArchiveDB.elite_arrays: the elites of ArchiveDB.elites as columns, bit for bit, in any chunking; and an
archive restored from them equals one restored from the dicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive_db import ArchiveDB, ArchiveDBError, Outcome, Proposal
from archive_db.reads import _descriptor_rows
from openended.qd import DescriptorSpace, make_archive, restore_archive

finite = st.floats(allow_nan=False, allow_infinity=False)


def _db(path, descriptors, novelty, cells) -> ArchiveDB:
    n, d = len(descriptors), len(descriptors[0])
    schema = {"names": [f"d{i}" for i in range(d)], "bounds": [[0, 1]] * d, "bins": [10] * d}
    db = ArchiveDB(path)
    db.create_run(name="t", task="toy", seed=1, config={}, descriptor_schema=schema)
    db.propose([Proposal(id=i, parent_id=None, operator="s", seed=i) for i in range(n)])
    db.record([Outcome(id=i, status="archived", files={"g": str(i).encode()}, fitness=float(i) / 3,
                       descriptors=list(descriptors[i]), novelty=novelty[i]) for i in range(n)])
    db.set_elites({cell: i for i, cell in enumerate(cells)})
    return db


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), n=st.integers(1, 40), d=st.integers(1, 4), chunk=st.integers(1, 50))
def test_columns_equal_the_dicts_bit_for_bit(tmp_path_factory, data, n, d, chunk):
    descriptors = data.draw(st.lists(st.lists(finite, min_size=d, max_size=d), min_size=n, max_size=n))
    novelty = data.draw(st.lists(st.none() | finite, min_size=n, max_size=n))
    cells = data.draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n, unique=True))
    db = _db(tmp_path_factory.mktemp("e") / "c.db", descriptors, novelty, cells)
    try:
        dicts, columns = db.elites(), db.elite_arrays(chunk=chunk)
    finally:
        db.close()
    assert columns["cell"].dtype == columns["agent_id"].dtype == np.int64
    assert columns["cell"].tolist() == [e["cell"] for e in dicts] == sorted(cells)
    assert columns["agent_id"].tolist() == [e["agent_id"] for e in dicts]
    assert columns["fitness"].tolist() == [e["fitness"] for e in dicts]
    assert [None if np.isnan(v) else v for v in columns["novelty"].tolist()] == [e["novelty"] for e in dicts]
    expected = np.array([e["descriptors"] for e in dicts], dtype=np.float64)
    assert columns["descriptors"].shape == (n, d)
    assert np.array_equal(columns["descriptors"].view(np.int64), expected.view(np.int64))  # -0.0 too


def test_no_elites_and_descriptors_that_are_not_flat_numbers(tmp_path):
    db = _db(tmp_path / "c.db", [[0.5, 0.5], [0.1, 0.2]], [0.1, 0.2], [])
    try:
        assert {k: v.size for k, v in db.elite_arrays().items()} == dict.fromkeys(
            ("cell", "agent_id", "fitness", "novelty", "descriptors"), 0)
    finally:
        db.close()
    # rows of different lengths that would fill an (n, d) array if read as one flat list; nested arrays
    with pytest.raises(ArchiveDBError, match="one length"):
        _descriptor_rows(("[1, 2, 3]", "[4]"))
    with pytest.raises(ArchiveDBError, match="one length"):
        _descriptor_rows(("[1, 2]", "[3, [4]]"))
    assert _descriptor_rows(("[1e-3, 2]", "[ 3.5,-4 ]")).tolist() == [[0.001, 2.0], [3.5, -4.0]]


def test_an_archive_restored_from_the_columns_equals_one_from_the_dicts(tmp_path):
    space = DescriptorSpace.from_dict({"names": ["x", "y"], "lower": [0, 0], "upper": [1, 1], "bins": [10, 10]})
    archive = make_archive("all", space=space, fitness_offset=0.0, seed=0)
    X = np.random.default_rng(0).uniform(size=(300, 2))
    for i, x in enumerate(X):
        archive.add(i, float(i) / 3, x)
    m = archive.members()
    novelty = np.zeros(300)
    novelty[m["agent_id"]] = m["novelty"]
    db = _db(tmp_path / "c.db", X.tolist(), novelty.tolist(), [])
    try:
        db.set_elites(dict(zip(m["cell"].tolist(), m["agent_id"].tolist(), strict=True)))
        a = restore_archive(schema=archive.schema(), state=archive.state(), elites=db.elite_arrays(chunk=64))
        b = restore_archive(schema=archive.schema(), state=archive.state(), elites=db.elites())
    finally:
        db.close()
    assert a.stats() == b.stats() == archive.stats()
    for key, value in archive.members().items():
        np.testing.assert_array_equal(a.members()[key], value)
