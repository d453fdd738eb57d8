"""One rule for a genome file's path (openended.names.genome_path_problem), and the genome sources that use it:
a worker's genome (check_files, the recorder) and the store. The user's folder is tested in
tests/engine/test_initial_agents.py, a model's answer in tests/llm/test_llm_ops.py and
tests/mutation/test_search_replace.py, export in tests/inspection/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from archive_db import ArchiveDB, InvalidValueError, Outcome, Proposal
from openended.engine.dedupe import Dedupe
from openended.engine.jobs import ChildResult, Evaluate
from openended.engine.recorder import Child, Counters, Recorder
from openended.names import MAX_GENOME_PATH_CHARS, genome_path_problem
from openended.portfolio import Portfolio
from openended.qd import make_archive
from openended.results import InvalidResult, check_files
from openended.selection import LineageCounts

# Pieces that make paths hard to judge: separators, dots, backslashes, control characters, a lone surrogate.
PIECES = ["a", "b.py", "é", " ", "-", "~", ".", "..", "...", "/", "//", "\\", "\x00", "\n", "\r", "\t", "\ud800",
          "\udcff", ":", "C:"]
tricky = st.lists(st.sampled_from(PIECES), min_size=0, max_size=12).map("".join)


def _inside(root: Path, name: str) -> bool:
    """Whether ``root / name``, resolved, lies strictly inside ``root``."""
    target = (root / name).resolve()
    return target != root and target.is_relative_to(root)


@settings(max_examples=400, deadline=None)
@given(name=tricky | st.text(max_size=30))
def test_an_accepted_path_stays_inside_its_folder_and_a_path_that_leaves_it_is_refused(name):
    problem = genome_path_problem(name)
    if problem is None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp).resolve()
            assert _inside(root, name), name
    else:
        assert isinstance(problem, str) and problem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(name=tricky)
def test_a_file_written_at_an_accepted_path_lands_inside_the_folder(name):
    assume(genome_path_problem(name) is None)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp).resolve()
        root = base / "agent"
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
        written = [Path(here) / f for here, _, files in os.walk(base) for f in files]
        assert written == [target] and target.resolve().is_relative_to(root)


@pytest.mark.parametrize(("name", "shown", "why"), [
    ("/etc/passwd", "'/etc/passwd'", "absolute path"),
    ("../evil.py", "'../evil.py'", "'..'"),
    ("lib/../../evil.py", "'lib/../../evil.py'", "'..'"),
    ("./main.py", "'./main.py'", "'.'"),
    ("lib//main.py", "'lib//main.py'", "empty segment"),
    ("lib/", "'lib/'", "empty segment"),
    ("lib\\main.py", "lib\\\\main.py", "backslash"),
    ("..\\evil.py", "..\\\\evil.py", "backslash"),
    ("a\x00b.py", "a\\x00b.py", "NUL"),
    ("a\nb.py", "a\\nb.py", "newline"),
    ("a\rb.py", "a\\rb.py", "newline"),
    ("bad\ud800.py", "bad\\\\ud800.py", "lone surrogate"),
    ("", "''", "not a non-empty string"),
    (b"main.py", "b'main.py'", "not a non-empty string"),
    ("a" * (MAX_GENOME_PATH_CHARS + 1), "'aaaa", f"{MAX_GENOME_PATH_CHARS + 1} characters"),
])
def test_every_refused_class_is_refused_with_a_message_naming_the_path(name, shown, why):
    problem = genome_path_problem(name)
    assert problem is not None and shown in problem and why in problem, problem


@pytest.mark.parametrize("name", ["main.py", "lib/util.py", "a/b/c/d.txt", ".hidden", "...", "a..b", "é/ü.py",
                                  "x" * MAX_GENOME_PATH_CHARS])
def test_plain_relative_paths_are_accepted(name):
    assert genome_path_problem(name) is None


# ---------------------------------------------------------------------- a worker's genome (operators, models)


@pytest.mark.parametrize(("name", "shown"), [
    ("../evil.py", "'../evil.py'"), ("/etc/passwd", "'/etc/passwd'"), ("lib\\x.py", "lib\\\\x.py"),
    ("lib//x.py", "'lib//x.py'"), ("x\ud800.py", "x\\\\ud800.py"),
])
def test_check_files_refuses_a_bad_name_naming_it(name, shown):
    with pytest.raises(InvalidResult) as info:
        check_files({"main.py": b"ok\n", name: b"x"})
    assert shown in str(info.value) and str(info.value).startswith("genome file name")
    str(info.value).encode("utf-8")  # storable as the child's failure reason


def test_check_files_keeps_nested_paths():
    files = {"main.py": b"1", "lib/util.py": bytearray(b"2")}
    assert check_files(files) == files


def _code_recorder(db: ArchiveDB, queued: list) -> Recorder:
    space = {"names": ["a"], "lower": [0.0], "upper": [1.0], "bins": [4]}
    archive = make_archive("grid", space=space, fitness_offset=0.0)
    db.create_run(name="t", task="t", seed=0, config={}, descriptor_schema=archive.schema(),
                  state={"archive": archive.state()})
    return Recorder(db, archive, lineage=LineageCounts(), portfolio=Portfolio.build(["ast"], []),
                    counters=Counters(), n_descriptors=1, dedupe=Dedupe({}),
                    driver_state=lambda: {"archive": archive.state()}, requeue=queued.append,
                    remember=lambda aid, files: None, fitness_upper=1.0)


def test_a_child_genome_with_a_bad_name_fails_that_child_and_the_batch_goes_on(tmp_path):
    queued: list = []
    with ArchiveDB(tmp_path / "c.db") as db:
        rec = _code_recorder(db, queued)
        with db.transaction():
            db.propose([Proposal(0, None, "seed", 0), Proposal(1, None, "seed", 1)])
        rec.children.update({0: Child(None), 1: Child(None)})
        rec.mutations([ChildResult(0, files={"main.py": b"x = 1\n", "../evil.py": b"import os\n"}),
                       ChildResult(1, files={"main.py": b"x = 2\n", "lib/util.py": b"y = 1\n"})])
        bad, good = db.agent(0), db.agent(1)
        assert bad["status"] == "failed" and bad["fail_stage"] == "invalid"
        assert "'../evil.py'" in bad["fail_reason"]
        assert good["status"] == "mutated"
        assert db.agent_files(1) == {"lib/util.py": b"y = 1\n", "main.py": b"x = 2\n"}
        assert [(type(j), j.agent_id) for j in queued] == [(Evaluate, 1)]


# ---------------------------------------------------------------------------------------------------- the store


@pytest.mark.parametrize("name", ["../evil.py", "/etc/passwd", "lib\\x.py", "./main.py"])
def test_the_store_refuses_a_bad_name_naming_the_agent_and_the_path(tmp_path, name):
    with ArchiveDB(tmp_path / "c.db") as db:
        db.create_run(name="t", task="t", seed=0, config={}, descriptor_schema={})
        db.propose([Proposal(0, None, "seed", 0)])
        with pytest.raises(InvalidValueError) as info:
            db.record([Outcome(id=0, status="mutated", files={"main.py": b"1", name: b"2"})])
        assert str(info.value).startswith("agent 0: file name") and repr(name)[1:-1] in str(info.value)
        assert db.agent(0)["status"] == "proposed"
        with pytest.raises(InvalidValueError, match="genome: file name"):
            db.put_genome({name: b"2"})


def test_a_str_subclass_is_checked_by_its_characters_and_the_cache_holds_short_names_only():
    """The checks remember the names they saw (a campaign names the same few files again and again): a str
    subclass that lies about itself is checked by its characters, and an over-long name is refused before the
    memory, so a hostile result's huge names are not kept."""
    from openended.names import _short_path_problem

    class Liar(str):
        def __str__(self) -> str:
            return "fine.py"

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash("fine.py")

    assert genome_path_problem("fine.py") is None
    assert "'..'" in (genome_path_problem(Liar("../evil.py")) or "")
    assert genome_path_problem("fine.py") is None  # not poisoned by the liar
    before = _short_path_problem.cache_info().currsize
    assert "characters long" in (genome_path_problem("x" * (MAX_GENOME_PATH_CHARS + 1)) or "")
    assert _short_path_problem.cache_info().currsize == before
