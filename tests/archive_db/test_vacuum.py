"""`openended vacuum DB` and :func:`archive_db.vacuum` (issue 18, item 5), on real SQLite files: the file
shrinks after data is deleted, a reader open across the vacuum keeps reading consistent data, a running
driver (its lock, and a real `openended run`) makes it refuse naming the database, and a missing,
empty, foreign or corrupt file gets a plain error with the file left as it was."""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import toy
from typer.testing import CliRunner

import archive_db
from archive_db import ArchiveDB, NotADatabaseError, Outcome, Proposal
from openended.cli import app
from openended.config import CampaignConfig

SCHEMA = {"names": ["x", "y"], "bounds": [[0.0, 1.0], [0.0, 1.0]], "bins": [4, 4]}
BLOB = 16_000  # bytes of incompressible genome per agent


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def make_campaign(path: Path, n: int = 200, *, incremental: bool = False) -> None:
    """A chain of ``n`` archived agents, each with its own random genome, beside ``n`` more stored genomes
    no agent uses; then those are deleted (as compaction drops materialised genomes): about half the
    file becomes free pages."""
    db = ArchiveDB(path)
    if incremental:
        db.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.conn.execute("VACUUM")  # an existing database takes a new auto_vacuum mode only through VACUUM
    db.create_run(name="t", task="toy", seed=1, config=CampaignConfig().model_dump(mode="json"),
                  descriptor_schema=SCHEMA)
    rng = random.Random(0)
    with db.transaction():
        db.propose(Proposal(id=i, parent_id=i - 1 if i else None, operator="gaussian", seed=i) for i in range(n))
        db.record(Outcome(id=i, status="archived", files={"w.bin": rng.randbytes(BLOB)}, fitness=float(i),
                          descriptors=[0.5, 0.5], novelty=0.1, cell=i % 16) for i in range(n))
        for _ in range(n):
            db.put_genome({"w.bin": rng.randbytes(BLOB)})
    with db.transaction():
        db.conn.execute("DELETE FROM genomes WHERE hash NOT IN (SELECT genome_hash FROM agents)")
        db.conn.execute("DELETE FROM blobs WHERE hash NOT IN (SELECT value FROM genomes, json_each(genomes.manifest))")
    db.close()


def contents(path: Path) -> dict[str, object]:
    """What a reader sees: every agent row, every genome's files, the lineage of the last agent."""
    with ArchiveDB(path, readonly=True) as db:
        return read_all(db)


def read_all(db: ArchiveDB) -> dict[str, object]:
    n = db.conn.execute("SELECT COUNT(*) FROM agents").fetchone()[0]
    return {"agents": db.conn.execute("SELECT * FROM agents ORDER BY id").fetchall(),
            "files": [db.agent_files(i) for i in range(n)],
            "lineage": db.ancestors(n - 1) if n else []}


def on_disk(path: Path) -> int:
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


def integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# space


@pytest.mark.parametrize("incremental", [False, True], ids=["vacuum", "incremental"])
def test_vacuum_after_deleting_data_shrinks_the_file_and_keeps_every_row(tmp_path, incremental):
    path = tmp_path / "c.db"
    make_campaign(path, incremental=incremental)
    before, size = contents(path), on_disk(path)
    assert size > 200 * BLOB  # the deleted genomes' pages are still in the file

    report = archive_db.vacuum(path)
    assert report.mode == ("incremental_vacuum" if incremental else "vacuum")
    assert report.bytes_before == size and report.bytes_after == on_disk(path)
    assert report.checkpointed and report.bytes_after == report.database_bytes
    assert report.free_pages_before * report.page_size >= 90 * BLOB
    assert report.bytes_after < 0.6 * report.bytes_before, report  # half the genomes are gone
    assert contents(path) == before
    assert integrity(path) == "ok"
    again = archive_db.vacuum(path)  # nothing left to reclaim
    assert again.free_pages_before == 0 and again.bytes_after == again.bytes_before == report.bytes_after


def test_cli_reports_bytes_before_and_after(tmp_path):
    path = tmp_path / "c.db"
    make_campaign(path)
    size = on_disk(path)
    code, out, err = cli("vacuum", path)
    assert code == 0, err
    assert f"{path}: {size:,} -> {on_disk(path):,} bytes" in out and "reclaimed" in out
    assert on_disk(path) < 0.6 * size
    assert not Path(f"{path}.lock").exists(), "vacuum leaves no lock file beside a database that had none"
    code, out, _ = cli("vacuum", path, "--json")
    data = json.loads(out)
    assert code == 0 and data["bytes_before"] == data["bytes_after"] == on_disk(path) and data["reclaimed"] == 0


# ---------------------------------------------------------------------------------------------
# readers


def test_a_reader_holding_a_snapshot_across_the_vacuum_reads_the_same_data(tmp_path):
    path = tmp_path / "c.db"
    make_campaign(path)
    expected = contents(path)
    size = on_disk(path)
    with ArchiveDB(path, readonly=True) as reader:
        reader.conn.execute("BEGIN")
        assert read_all(reader) == expected  # its snapshot starts here, before the vacuum
        report = archive_db.vacuum(path, wait_s=0.2)
        # the reader's snapshot kept the old pages: the rebuilt database waits in the WAL
        assert not report.checkpointed and report.database_bytes < 0.6 * size
        assert read_all(reader) == expected
        assert reader.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        reader.conn.execute("COMMIT")
        assert read_all(reader) == expected  # a new snapshot: the vacuumed database, same rows
    report = archive_db.vacuum(path)  # the reader has let go: this checkpoint shrinks the file
    assert report.checkpointed and on_disk(path) == report.database_bytes < 0.6 * size
    assert contents(path) == expected and integrity(path) == "ok"


def _reader(path: str, started, stop, count, out) -> None:
    """Read everything (and `status`) over and over until told to stop; report how many reads and any
    that differed from the first."""
    from openended.status import campaign_status

    with ArchiveDB(path, readonly=True) as db:
        first = read_all(db)
        started.set()
        reads, bad = 0, []
        while not stop.is_set() or reads < 3:
            seen = read_all(db)
            if seen != first:
                bad.append(reads)
            if campaign_status(Path(path)).as_dict()["children_done"] != len(first["agents"]):
                bad.append(("status", reads))
            reads += 1
            count.value = reads
    out.put((reads, bad))


def test_a_reader_in_another_process_reads_consistent_data_during_vacuums(tmp_path):
    path = tmp_path / "c.db"
    make_campaign(path)
    expected = contents(path)
    ctx = mp.get_context("spawn")
    started, stop, count, out = ctx.Event(), ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    proc = ctx.Process(target=_reader, args=(str(path), started, stop, count, out))
    proc.start()
    try:
        assert started.wait(60)
        reads_before = count.value
        # Vacuums until the reader has finished a read among them (at least three): a vacuum of this small
        # database can take less time than one read of everything, so three alone may see none.
        reports = [archive_db.vacuum(path, wait_s=30) for _ in range(3)]
        deadline = time.monotonic() + 60
        while count.value == reads_before and time.monotonic() < deadline:
            reports.append(archive_db.vacuum(path, wait_s=30))
        code, _, err = cli("vacuum", path)  # the CLI too, with the reader open
        assert code == 0, err
        reads_during = count.value - reads_before
        stop.set()
        reads, bad = out.get(timeout=120)
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    assert reads >= 3 and bad == []
    assert reads_during > 0, "the reader read while the vacuums ran"
    assert reports[0].bytes_after < 0.6 * reports[0].bytes_before
    assert all(r.checkpointed for r in reports)  # readers between reads let the checkpoint through
    assert contents(path) == expected and integrity(path) == "ok"


def test_datasette_serving_the_database_answers_the_same_before_and_after_a_vacuum(tmp_path):
    """`openended serve`'s datasette (mode=ro connections it keeps open) across a vacuum."""
    pytest.importorskip("datasette")
    import asyncio

    from openended.serve import make_datasette

    path = tmp_path / "c.db"
    make_campaign(path)
    size = on_disk(path)
    ds = make_datasette(path)

    async def run() -> list[tuple[object, ...]]:
        await ds.invoke_startup()
        seen = []
        for step in range(2):
            if step == 1:
                assert cli("vacuum", path)[0] == 0  # datasette's connections stay open across it
            lineage = await ds.client.get("/c/ancestors.json?agent_id=199&_shape=array")
            agents = await ds.client.get("/c/agents.json?_shape=array&_size=max&_col=genome_hash&_col=fitness")
            dashboard = await ds.client.get("/-/dashboard.json")
            assert lineage.status_code == agents.status_code == dashboard.status_code == 200
            d = dashboard.json()
            d.pop("generated_at", None)
            seen.append((lineage.json(), agents.json(), d))
        return seen

    before, after = asyncio.run(run())
    assert len(before[0]) == 200 and len(before[1]) == 200
    assert after == before
    assert on_disk(path) < 0.6 * size


# ---------------------------------------------------------------------------------------------
# drivers


HOLD_LOCK = """
import sys
from pathlib import Path
from openended.engine import runtime
lock = runtime.lock_campaign(Path(sys.argv[1]))  # exactly what a driver does before it opens the store
print("locked", flush=True)
sys.stdin.read()
"""


def test_vacuum_refuses_while_a_driver_holds_the_campaign_lock(tmp_path, cli_env):
    path = tmp_path / "c.db"
    make_campaign(path)
    before = path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=cli_env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, out, err = cli("vacuum", path)
        assert code == 2 and out == ""
        assert f"error: cannot vacuum {path}: a driver is running this campaign" in err
        assert path.read_bytes() == before and on_disk(path) == len(before)  # no WAL frames either
    finally:
        holder.communicate("", timeout=60)  # the driver ends: the OS drops its lock
    assert Path(f"{path}.lock").exists()  # the driver's lock file
    code, out, err = cli("vacuum", path)
    assert code == 0, err
    assert on_disk(path) < 0.6 * len(before)
    assert Path(f"{path}.lock").exists(), "a lock file vacuum did not make is left where it was"


def _lock_held(path: Path) -> bool:
    try:
        with open(f"{path}.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def _agents(path: Path) -> int:
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM agents").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet
        return 0


def test_vacuum_refuses_while_openended_run_drives_the_campaign(tmp_path, ray_address, cli_env):
    path = tmp_path / "c.db"
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        driver = subprocess.Popen([sys.executable, "-m", "openended", "run", "--task", toy(), "--db", str(path),
                                   "--budget", "100000000", "--max-seconds", "300", "--sandbox", "inprocess",
                                   "--ray-address", ray_address, "--quiet"],
                                  stdout=fh, stderr=subprocess.STDOUT, env=cli_env)
    try:
        deadline = time.monotonic() + 120
        while not (_lock_held(path) and _agents(path) >= 10):  # in its loop, signal handlers installed
            assert driver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the driver wrote no children in 120 s:\n" + log.read_text()
            time.sleep(0.05)  # polling the driver's start, not waiting for an outcome
        code, out, err = cli("vacuum", path)
        assert code == 2 and out == ""
        assert f"error: cannot vacuum {path}: a driver is running this campaign" in err
        assert driver.poll() is None, "the refused vacuum disturbed the driver"
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)
        driver.wait(120)
    assert driver.returncode == 0 and "stopped (signal)" in log.read_text(), log.read_text()
    code, out, err = cli("vacuum", path)
    assert code == 0, err
    assert f"{path}: " in out and integrity(path) == "ok"
    # the vacuumed campaign resumes where it stopped
    status = json.loads(cli("status", path, "--json")[1])
    finished = status["children_done"] + status["children_failed"]
    resumed = subprocess.run([sys.executable, "-m", "openended", "resume", str(path), "--budget", str(finished + 5),
                              "--ray-address", ray_address, "--quiet"], env=cli_env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = json.loads(cli("status", path, "--json")[1])
    assert status["children_done"] + status["children_failed"] > finished  # (children left in flight count too)
    assert integrity(path) == "ok"


# ---------------------------------------------------------------------------------------------
# files that are no campaign


def test_missing_empty_foreign_and_corrupt_files_get_a_plain_error_and_stay_as_they_were(tmp_path):
    missing = tmp_path / "missing.db"
    code, out, err = cli("vacuum", missing)
    assert code == 2 and f"error: no such database: {missing}" in err
    with pytest.raises(FileNotFoundError, match="no such database"):
        archive_db.vacuum(missing)
    assert not missing.exists() and not Path(f"{missing}.lock").exists()

    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "text.db").write_text("not a database\n" * 300)
    bare = sqlite3.connect(tmp_path / "bare.db")
    bare.execute("VACUUM")  # a valid SQLite file with no tables
    bare.close()
    for name in ("corrupt.db", "garbage.db"):
        make_campaign(tmp_path / name, n=40)
    conn = sqlite3.connect(tmp_path / "corrupt.db")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'agents'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray((tmp_path / "corrupt.db").read_bytes())
    data[(root - 1) * page_size] = 0xFF  # the agents table's root page: no valid b-tree page type
    (tmp_path / "corrupt.db").write_bytes(bytes(data))
    data = bytearray((tmp_path / "garbage.db").read_bytes())
    data[page_size:] = random.Random(1).randbytes(len(data) - page_size)  # all but the first page
    (tmp_path / "garbage.db").write_bytes(bytes(data))

    for name, words in [("empty.db", "is an empty file (0 bytes), not an openended database"),
                        ("text.db", "is not an SQLite database"),
                        ("bare.db", "is an SQLite database with no tables, not an openended database"),
                        ("corrupt.db", "is corrupt (database disk image is malformed); vacuum changed nothing"),
                        ("garbage.db", "is not a valid SQLite database (database disk image is malformed)")]:
        path = tmp_path / name
        before = path.read_bytes()
        code, out, err = cli("vacuum", path)
        assert code == 2 and out == "", (name, out)
        assert f"error: {path} {words}" in err, (name, err)
        with pytest.raises(NotADatabaseError, match=words.split(" (")[0]):
            archive_db.vacuum(path)
        assert path.read_bytes() == before, f"vacuum changed {name}"
        assert not Path(f"{path}.lock").exists(), f"vacuum left {name}.lock behind"
