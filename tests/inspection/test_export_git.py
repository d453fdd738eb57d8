"""`openended export DB AGENT --git DIR`: an agent's lineage as a real git repository (GitPython
writes it, the git command line reads it back).

Campaigns: the session's maze campaign (parameter genome, ``weights.npy``), a binpack campaign
evolved by the ``ast`` operator (code genome, ``priority.py``) and the hand-built code campaign.

What "git diff equals openended diff" means here, per pair of agents A, B of one lineage:

- the same files changed, each with the same kind of change (added, removed, modified);
- per file, the same net line change: the multiset of lines added minus the multiset of lines
  removed (and the reverse). Hunk boundaries, context lines and headers are not compared: git's
  Myers diff and difflib may align a moved or repeated line differently (one diff removes line X
  and adds it two lines lower, the other does the same with line Y), so the raw +/- lines of two
  correct diffs can differ while their net change cannot;
- for ``.npy`` arrays (positional values, no moves) the multisets of added lines and of removed
  lines each match exactly;
- for text files, ``git apply`` of the ``openended diff`` output on a checkout of ``agent-A``
  gives exactly ``agent-B``'s tree: both patches do the same thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import git
import pytest
from inspect_campaigns import (
    CODE_CONFIG,
    CODE_SCHEMA,
    ROOT,
    build_binpack_db,
    build_campaign_db,
    build_code_db,
    cli,
    cli_json,
    rows,
)

from archive_db import ArchiveDB, Outcome, Proposal
from openended.inspection.gitexport import EPOCH

#: git as a user runs it, minus the user's and the system's config (colours, prefixes, aliases);
#: PYTHONPATH so the repository's .npy textconv driver imports openended from this checkout.
GIT_ENV = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=GIT_ENV,
                          check=check, timeout=120)


@pytest.fixture(scope="session")
def maze_db(tmp_path_factory, ray_address) -> Path:
    return build_campaign_db(tmp_path_factory)["path"]


@pytest.fixture(scope="module")
def binpack_db(tmp_path_factory, ray_address) -> Path:
    return build_binpack_db(tmp_path_factory.mktemp("binpack"))


@pytest.fixture(scope="module")
def code_db(tmp_path_factory) -> Path:
    return build_code_db(tmp_path_factory.mktemp("code") / "code.db")


def deepest(db_path: Path) -> int:
    """The deepest agent that has files (ties: lowest id)."""
    return rows(db_path, "SELECT id FROM agents WHERE genome_hash IS NOT NULL ORDER BY depth DESC, id LIMIT 1")[0][0]


def lineage_ids(db_path: Path, agent: int) -> list[int]:
    with ArchiveDB(db_path, readonly=True) as db:
        return [a.id for a in db.ancestors(agent)]


@pytest.fixture(params=["maze", "binpack", "code"])
def evolved(request) -> tuple[Path, int]:
    """(database, agent) with a lineage of at least three agents."""
    if request.param == "maze":
        db = request.getfixturevalue("maze_db")
        agent = cli_json("top", db, "-k", "1")[0]["id"]
    elif request.param == "binpack":
        db = request.getfixturevalue("binpack_db")
        agent = deepest(db)
    else:
        db, agent = request.getfixturevalue("code_db"), 5  # 0 -> 1 -> 2 -> 5 (5 is a crossover of 2 and 1)
    assert len(lineage_ids(db, agent)) >= 3, "the campaign should be deep enough to test a lineage"
    return db, agent


def tree_files(commit: git.Commit) -> dict[str, bytes]:
    return {b.path: b.data_stream.read() for b in commit.tree.traverse() if b.type == "blob"}


def work_tree_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(folder).parts}


# ---------------------------------------------------------------------------------------------
# the commit graph is the lineage


def test_commit_graph_equals_the_agents_ancestry(evolved, tmp_path):
    db_path, agent = evolved
    out = cli_json("export", db_path, str(agent), "--git", tmp_path / "repo")
    repo = git.Repo(tmp_path / "repo")
    with ArchiveDB(db_path, readonly=True) as db:
        ancestors = db.ancestors(agent)  # root first
        agents = {a.id: db.agent(a.id) for a in ancestors}
        files = {a.id: db.agent_files(a.id) for a in ancestors}
    tag_of = {t.commit.hexsha: t.name for t in repo.tags}
    commit_of = {t.name: t.commit for t in repo.tags}
    assert sorted(commit_of) == sorted(f"agent-{a}" for a in agents), "one lightweight tag per ancestor"
    assert all(t.tag is None for t in repo.tags), "lightweight tags, not tag objects"

    walked = list(repo.iter_commits("main"))  # newest first, following parents
    assert [tag_of[c.hexsha] for c in reversed(walked)] == [f"agent-{a.id}" for a in ancestors]
    for c in walked:
        aid = int(tag_of[c.hexsha].removeprefix("agent-"))
        row = agents[aid]
        parent = row["parent_id"]
        assert [p.hexsha for p in c.parents] == ([] if parent is None else [commit_of[f"agent-{parent}"].hexsha])
        assert tree_files(c) == files[aid]
        fitness = "none" if row["fitness"] is None else repr(row["fitness"])
        assert c.message == (f"agent {aid}: operator {row['operator']}, model {row['model'] or 'none'}, "
                             f"fitness {fitness} ({row['status']})\n")
        assert c.authored_date == c.committed_date == EPOCH + aid
        assert (c.author.name, c.author.email) == (c.committer.name, c.committer.email) == ("openended",
                                                                                          "openended@localhost")
    assert repo.head.reference.name == "main" and repo.head.commit == commit_of[f"agent-{agent}"]
    assert not repo.is_dirty(untracked_files=True)
    assert work_tree_files(tmp_path / "repo") == files[agent]
    assert out["branch"] == "main" and out["agent"] == agent
    assert [(c["agent"], c["commit"]) for c in out["commits"]] == [
        (a.id, commit_of[f"agent-{a.id}"].hexsha) for a in ancestors]
    # and git itself agrees: the log is the lineage, newest first
    log = run_git(tmp_path / "repo", "log", "--format=%H %s").stdout.splitlines()
    assert [line.split()[0] for line in log] == [c.hexsha for c in walked]
    run_git(tmp_path / "repo", "fsck", "--strict")


def test_the_same_lineage_gives_the_same_commit_hashes(evolved, tmp_path):
    db_path, agent = evolved
    first = cli_json("export", db_path, str(agent), "--git", tmp_path / "one")
    second = cli_json("export", db_path, str(agent), "--git", tmp_path / "two", "--lineage")  # --lineage: the same
    assert first["commits"] == second["commits"]
    again = cli_json("export", db_path, str(agent), "--git", tmp_path / "one", "--overwrite")
    assert again["commits"] == first["commits"]
    parent = lineage_ids(db_path, agent)[-2]  # a shorter lineage: a prefix of the same commits
    shorter = cli_json("export", db_path, str(parent), "--git", tmp_path / "three")
    assert shorter["commits"] == first["commits"][:-1]


def test_a_relative_folder_is_the_current_folders(evolved, tmp_path, monkeypatch):
    """As the README writes it (``--git ./lineage``): git runs inside the new repository, so a relative path
    handed to it once pointed elsewhere and the export failed."""
    db_path, agent = evolved
    first = cli_json("export", db_path, str(agent), "--git", tmp_path / "one")
    monkeypatch.chdir(tmp_path)
    relative = cli_json("export", db_path, str(agent), "--git", "./lineage")
    assert relative["commits"] == first["commits"]
    assert git.Repo(tmp_path / "lineage").head.commit.hexsha == first["commits"][-1]["commit"]


# ---------------------------------------------------------------------------------------------
# git diff between two agents = openended diff of those agents

def diff_lines(text: str) -> dict[str, dict]:
    """Per file of a unified diff (``openended diff`` or ``git diff``): its change (``added``,
    ``removed``, ``modified``) and the lines it adds and removes. Hunk line counts say where a
    hunk ends, so content lines that look like headers are read as content."""
    out: dict[str, dict] = {}
    current: dict | None = None
    old_left = new_left = 0
    old_path = ""
    for line in text.splitlines():
        if old_left > 0 or new_left > 0:
            assert current is not None
            if line.startswith("-"):
                current["removed"].append(line[1:])
                old_left -= 1
            elif line.startswith("+"):
                current["added"].append(line[1:])
                new_left -= 1
            elif line.startswith(" "):
                old_left -= 1
                new_left -= 1
            continue
        if line.startswith("--- "):
            old_path = line[4:].split("\t")[0]
        elif line.startswith("+++ "):
            new_path = line[4:].split("\t")[0]
            path = (new_path if new_path != "/dev/null" else old_path).split("/", 1)[1]
            kind = "added" if old_path == "/dev/null" else "removed" if new_path == "/dev/null" else "modified"
            current = out.setdefault(path, {"change": kind, "added": [], "removed": []})
        elif line.startswith("@@ "):
            old, new = line.split(" ")[1:3]
            old_left = int(old.split(",")[1]) if "," in old else 1
            new_left = int(new.split(",")[1]) if "," in new else 1
        elif line.startswith("Binary files "):
            raise AssertionError(f"a binary file in the diff: {line}")
    return out


def net(lines: dict) -> tuple[Counter, Counter]:
    added, removed = Counter(lines["added"]), Counter(lines["removed"])
    return added - removed, removed - added


def pairs(ids: list[int]) -> list[tuple[int, int]]:
    """Root -> agent, middle -> agent, parent -> agent, root -> middle, and agent -> root (backwards)."""
    root, mid, parent, agent = ids[0], ids[len(ids) // 2], ids[-2], ids[-1]
    return sorted({(root, agent), (mid, agent), (parent, agent), (root, mid), (agent, root)})


def test_git_diff_equals_openended_diff(evolved, tmp_path):
    db_path, agent = evolved
    repo = tmp_path / "repo"
    cli_json("export", db_path, str(agent), "--git", repo)
    compared = 0
    for a, b in pairs(lineage_ids(db_path, agent)):
        ours = cli_json("diff", db_path, str(a), str(b))["text"]
        theirs = run_git(repo, "diff", f"agent-{a}", f"agent-{b}").stdout
        mine, gits = diff_lines(ours), diff_lines(theirs)
        assert sorted((p, f["change"]) for p, f in mine.items()) == sorted((p, f["change"]) for p, f in gits.items())
        names = run_git(repo, "diff", "--name-only", f"agent-{a}", f"agent-{b}").stdout.split()
        assert sorted(names) == sorted(mine)
        for path in mine:
            assert net(mine[path]) == net(gits[path]), f"{path}: agents {a} -> {b}"
            if path.endswith(".npy"):
                assert Counter(mine[path]["added"]) == Counter(gits[path]["added"])
                assert Counter(mine[path]["removed"]) == Counter(gits[path]["removed"])
                assert mine[path]["added"], "a changed array shows its changed values"
            compared += 1
        if ours and not any(p.endswith(".npy") for p in mine):
            # text only: the openended diff is a patch git applies, and it turns agent A into agent B
            patch = tmp_path / f"{a}-{b}.diff"
            patch.write_text(ours)
            run_git(repo, "checkout", "-q", f"agent-{a}")
            run_git(repo, "apply", str(patch))
            assert run_git(repo, "diff", "--quiet", f"agent-{b}", check=False).returncode == 0, (a, b)
            run_git(repo, "checkout", "-q", "-f", "main")
    assert compared >= 3


def test_npy_values_diff_one_per_line_in_git(maze_db, tmp_path):
    """The repository's textconv driver renders arrays like `openended diff`: a parent -> child
    diff in git shows the changed values, not 'Binary files differ'."""
    best = cli_json("top", maze_db, "-k", "1")[0]
    cli_json("export", maze_db, "best", "--git", tmp_path / "repo")
    text = run_git(tmp_path / "repo", "log", "-p", "-1", "--format=").stdout
    assert "Binary files" not in text and "+++ b/weights.npy" in text
    ours = cli_json("diff", maze_db, str(best["id"]))
    assert net(diff_lines(text)["weights.npy"]) == net(diff_lines(ours["text"])["weights.npy"])


# ---------------------------------------------------------------------------------------------
# git bisect on an evolved lineage

BISECT_SCRIPT = """
import pathlib, subprocess, sys
subject = subprocess.run(["git", "log", "-1", "--format=%s"], capture_output=True, text=True, check=True).stdout
aid = int(subject.split(":")[0].split()[1])
here = pathlib.Path(".")
got = {p.as_posix(): p.read_bytes() for p in here.rglob("*") if p.is_file() and ".git" not in p.parts}
want_dir = pathlib.Path(sys.argv[1]) / f"agent-{aid}"
want = {p.relative_to(want_dir).as_posix(): p.read_bytes() for p in want_dir.rglob("*") if p.is_file()}
if got != want:
    sys.exit(200)  # the checkout is not that agent's files: abort the bisect
with open(sys.argv[3], "a") as log:
    log.write(f"{aid}\\n")
sys.exit(1 if aid >= int(sys.argv[2]) else 0)
"""


@pytest.mark.parametrize("which", ["maze", "binpack"])
def test_git_bisect_finds_the_first_bad_ancestor(which, request, tmp_path):
    db_path = request.getfixturevalue(f"{which}_db")
    agent = cli_json("top", db_path, "-k", "1")[0]["id"] if which == "maze" else deepest(db_path)
    ids = lineage_ids(db_path, agent)
    bad = ids[len(ids) // 2]  # "bad" from this ancestor on: bisect must name its commit
    repo = tmp_path / "repo"
    out = cli_json("export", db_path, str(agent), "--git", repo)
    folders = cli_json("export", db_path, str(agent), tmp_path / "lineage", "--lineage")
    assert sorted({Path(f).relative_to(tmp_path / "lineage").parts[0] for f in folders["files"]}) == sorted(
        f"agent-{i}" for i in ids)
    script, tested = tmp_path / "check.py", tmp_path / "tested.txt"
    script.write_text(BISECT_SCRIPT)
    run_git(repo, "bisect", "start", "main", f"agent-{ids[0]}")
    result = run_git(repo, "bisect", "run", sys.executable, str(script), str(tmp_path / "lineage"), str(bad),
                     str(tested))
    sha = {c["agent"]: c["commit"] for c in out["commits"]}[bad]
    assert f"{sha} is the first bad commit" in result.stdout, result.stdout + result.stderr
    assert f"agent {bad}: operator" in result.stdout
    assert tested.read_text().split(), "the script ran on bisect's checkouts"
    run_git(repo, "bisect", "reset")
    assert run_git(repo, "rev-parse", "HEAD").stdout.strip() == out["commits"][-1]["commit"]


# ---------------------------------------------------------------------------------------------
# what export --git refuses


def test_export_git_refuses_a_folder_in_use_unless_overwrite(code_db, tmp_path):
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code, _, err = cli("export", code_db, "5", "--git", dest)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    code, _, err = cli("export", code_db, "5", "--git", tmp_path / "file")
    assert code == 2 and "not a directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("export", code_db, "5", "--git", empty)[0] == 0  # an empty folder is fine
    got = cli_json("export", code_db, "5", "--git", dest, "--overwrite")
    assert not (dest / "keep.txt").exists() and (dest / "agent.py").exists()
    assert len(got["commits"]) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "repo"], "no temporary folder left"


def test_export_git_overwrite_never_deletes_the_database_or_the_current_folder(code_db, tmp_path, monkeypatch):
    import shutil

    home = tmp_path / "campaign"
    home.mkdir()
    shutil.copy(code_db, home / "code.db")
    code, _, err = cli("export", home / "code.db", "5", "--git", home, "--overwrite")
    assert code == 2 and "holds the campaign database" in err
    assert (home / "code.db").exists()
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    code, _, err = cli("export", code_db, "5", "--git", work, "--overwrite")
    assert code == 2 and "holds the current directory" in err
    assert (work / "sub").is_dir()


def test_export_git_refuses_bad_agents_and_leaves_nothing(code_db, tmp_path):
    code, _, err = cli("export", code_db, "7", "--git", tmp_path / "repo")  # a file path climbing out
    assert code == 2 and "'../escape.py'" in err and "outside" in err
    code, _, err = cli("export", code_db, "3", "--git", tmp_path / "repo")  # failed in mutation: no genome
    assert code == 2 and "no files" in err
    assert list(tmp_path.iterdir()) == []
    code, _, err = cli("export", code_db, "5", tmp_path / "a", "--git", tmp_path / "b")
    assert code == 2 and "not both" in err
    code, _, err = cli("export", code_db, "5")
    assert code == 2 and "--git" in err
    (tmp_path / "db").mkdir()
    db = ArchiveDB(tmp_path / "db" / "dotgit.db")
    db.create_run(name="g", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0)])
    db.record([Outcome(id=0, status="archived", files={".git/hooks/post-checkout": b"#!/bin/sh\n"}, fitness=1.0,
                       descriptors=[0.5, 0.5])])
    db.close()
    code, _, err = cli("export", tmp_path / "db" / "dotgit.db", "0", "--git", tmp_path / "repo")
    assert code == 2 and "under .git" in err
    assert [p.name for p in tmp_path.iterdir()] == ["db"], "no repository and no temporary folder left"


def test_export_git_human_output_names_the_range(code_db, tmp_path):
    code, out, err = cli("export", code_db, "5", "--git", tmp_path / "repo")
    assert code == 0, err
    assert "4 commits, agent 0 (root) to agent 5" in out and "branch main" in out
    assert run_git(tmp_path / "repo", "tag").stdout.split() == ["agent-0", "agent-1", "agent-2", "agent-5"]
    assert run_git(tmp_path / "repo", "branch", "--show-current").stdout.strip() == "main"


def test_export_git_keeps_odd_paths_and_bytes(tmp_path):
    """Spaces, quotes, a tab, punctuation and non-ASCII in paths, nested folders, an empty file and binary
    bytes all come back from git exactly as stored (a backslash is no genome path: the store refuses it)."""
    files = {"a b/c \"d\".txt": b"quoted\n", "tab\there; it's #1.py": b"x = 1\n",
             "\u00fcn\u00efc\u00f8de.md": "\u00e9\n".encode(), "deep/er/still/file": b"",
             "blob.bin": bytes(range(256)), "weights.npy": b"not really an array"}
    (tmp_path / "db").mkdir()
    db = ArchiveDB(tmp_path / "db" / "odd.db")
    db.create_run(name="odd", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
    db.propose([Proposal(id=0, parent_id=None, operator="seed", seed=0),
                Proposal(id=1, parent_id=0, operator="ast", seed=1)])
    db.record([Outcome(id=0, status="archived", files=files, fitness=1.0, descriptors=[0.5, 0.5]),
               Outcome(id=1, status="archived", files={**files, "blob.bin": bytes(range(255, -1, -1))},
                       fitness=2.0, descriptors=[0.5, 0.5])])
    db.close()
    out = cli_json("export", tmp_path / "db" / "odd.db", "1", "--git", tmp_path / "repo")
    repo = git.Repo(tmp_path / "repo")
    assert tree_files(repo.commit(out["commits"][0]["commit"])) == files
    assert work_tree_files(tmp_path / "repo") == {**files, "blob.bin": bytes(range(255, -1, -1))}
    changed = run_git(tmp_path / "repo", "diff", "--name-only", "agent-0", "agent-1").stdout.split()
    assert changed == ["blob.bin"]
    assert "Binary files" in cli_json("diff", tmp_path / "db" / "odd.db", "1")["text"]


def test_npy_textconv_driver(tmp_path, cli_env):
    """`python -m openended.inspection.npy_text FILE` prints an array as `openended diff` shows it,
    any other file unchanged, and starts without importing the store (git runs it twice per diff)."""
    import io

    import numpy as np

    from openended.genome_diff import npy_lines

    buf = io.BytesIO()
    np.save(buf, np.array([[0.5, -1.25], [3.0, 1e-300]]))
    (tmp_path / "w.npy").write_bytes(buf.getvalue())
    (tmp_path / "x.npy").write_bytes(b"\x00not an array\xff")
    cmd = [sys.executable, "-m", "openended.inspection.npy_text"]
    out = subprocess.run([*cmd, str(tmp_path / "w.npy")], capture_output=True, env=cli_env, check=True).stdout
    assert out.decode() == "".join(npy_lines(buf.getvalue())) and out.startswith(b"# shape (2, 2) dtype float64\n")
    out = subprocess.run([*cmd, str(tmp_path / "x.npy")], capture_output=True, env=cli_env, check=True).stdout
    assert out == b"\x00not an array\xff"
    assert subprocess.run(cmd, capture_output=True, env=cli_env).returncode == 2
    probe = ("import runpy, sys; sys.argv = ['npy_text', sys.argv[1]]\n"
             "try:\n    runpy.run_module('openended.inspection.npy_text', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('archive_db', 'sqlite_utils', 'git') if m in sys.modules), file=sys.stderr)")
    loaded = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "w.npy")], capture_output=True, text=True,
                            env=cli_env, check=True).stderr.strip()
    assert loaded == "[]"
