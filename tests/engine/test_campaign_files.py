"""`run`, `resume` and `status` on a file that holds no campaign: a plain error naming the path, the file
left as it was, no lock file beside it (issue 15). Through the real CLI; refused before Ray starts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archive_db import ArchiveDB, NotADatabaseError, holds_run
from openended.cli import app


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _no_campaign_files(tmp_path: Path) -> dict[str, bytes]:
    """name -> content of files that hold no campaign: empty, text, and an SQLite database with no tables."""
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "text.db").write_text("not a database\n" * 20)
    conn = sqlite3.connect(tmp_path / "bare.db")
    conn.execute("VACUUM")  # a valid SQLite file with no tables
    conn.close()
    return {name: (tmp_path / name).read_bytes() for name in ("empty.db", "text.db", "bare.db")}


def test_status_of_an_empty_file_says_so(tmp_path):
    (tmp_path / "empty.db").write_bytes(b"")
    code, out, err = cli("status", tmp_path / "empty.db")
    assert code == 2 and out == ""
    assert f"{tmp_path / 'empty.db'} is an empty file (0 bytes), not an openended database" in err
    assert "schema version" not in err and "read-write" not in err
    assert (tmp_path / "empty.db").stat().st_size == 0
    assert not Path(f"{tmp_path / 'empty.db'}.lock").exists()


def test_status_of_files_that_are_no_campaign_names_them(tmp_path):
    _no_campaign_files(tmp_path)
    code, _, err = cli("status", tmp_path / "text.db")
    assert code == 2 and f"{tmp_path / 'text.db'} is not an SQLite database" in err
    code, _, err = cli("status", tmp_path / "bare.db")
    assert code == 2 and f"{tmp_path / 'bare.db'} is an SQLite database with no tables, not an openended" in err
    assert "schema version" not in err


@pytest.mark.parametrize(("command", "name", "words"), [
    ("resume", "empty.db", "is an empty file (0 bytes): it holds no campaign to resume"),
    ("resume", "bare.db", "holds no campaign to resume"),
    ("resume", "text.db", "is not an SQLite database"),
    ("run", "text.db", "is not an SQLite database"),  # an empty file is where `run` may start a new campaign
])
def test_run_and_resume_refuse_before_writing_or_locking(tmp_path, command, name, words):
    path = tmp_path / name
    before = _no_campaign_files(tmp_path)[name]
    args = ("resume", path) if command == "resume" else ("run", "--db", path, "--sandbox", "inprocess")
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    assert f"error: {path}" in err and words in err
    assert path.read_bytes() == before, f"{command} wrote into {name}"
    assert not Path(f"{path}.lock").exists(), f"{command} left {name}.lock behind"
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


def test_holds_run_reads_without_writing(tmp_path):
    files = _no_campaign_files(tmp_path)
    assert holds_run(tmp_path / "empty.db") is False and holds_run(tmp_path / "bare.db") is False
    with pytest.raises(NotADatabaseError, match="text.db"):
        holds_run(tmp_path / "text.db")
    ArchiveDB(tmp_path / "schema-only.db").close()  # migrated, but no run row
    assert holds_run(tmp_path / "schema-only.db") is False
    with ArchiveDB(tmp_path / "c.db") as db:
        db.create_run(name="c", task="t", seed=0, config={}, descriptor_schema={})
    assert holds_run(tmp_path / "c.db") is True
    assert {name: (tmp_path / name).read_bytes() for name in files} == files


def test_status_makes_no_lock_file(tmp_path):
    """A campaign recorded as running whose driver left no lock file (copied elsewhere, say) reads as
    interrupted, and `status`, a reader, creates nothing beside it."""
    import json

    with ArchiveDB(tmp_path / "c.db") as db:
        db.create_run(name="c", task="maze-medium", seed=0, config={"budget": {"max_children": 10},
                      "archive": {"kind": "all"}, "selection": {"strategy": "novelty"}}, descriptor_schema={})
        db.update_run(status="running")
    code, out, err = cli("status", tmp_path / "c.db", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "interrupted"
    assert not Path(f"{tmp_path / 'c.db'}.lock").exists()


def test_a_database_reached_through_a_symbolic_link_is_locked_once(tmp_path, python, cli_env):
    """The lock follows the file, not the spelling of its path: a second driver through a link is refused."""
    import subprocess

    from openended.engine import runtime

    real = tmp_path / "real.db"
    with ArchiveDB(real) as db:
        db.create_run(name="t", task="maze", seed=0, config={}, descriptor_schema={"space": {"names": []}})
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    link.symlink_to(real)
    assert runtime.lock_path(link) == runtime.lock_path(real) == real.with_name("real.db.lock")
    held = runtime.lock_campaign(real)
    try:
        proc = subprocess.run([python, "-m", "openended", "resume", str(link)], env=cli_env, capture_output=True,
                              text=True, timeout=120)
    finally:
        runtime.unlock_campaign(held, remove=True)
    assert proc.returncode != 0 and "is being run by another process" in proc.stderr, proc.stderr[-2000:]
    assert not (link.parent / "link.db.lock").exists()
