"""Initial agents are folders of regular files with genome paths for names: a symbolic link, a special file or a
bad name is refused before any file is made."""

from __future__ import annotations

import os

import pytest
from conftest import toy

from openended.config import ConfigError, load_config
from openended.engine import Campaign
from openended.engine.runtime import read_agent


def _agent(tmp_path):
    folder = tmp_path / "agent"
    (folder / "lib").mkdir(parents=True)
    (folder / "main.py").write_text("x = 1\n")
    (folder / "lib" / "util.py").write_text("y = 2\n")
    (folder / ".hidden").write_text("left out\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    return folder


def test_an_agent_is_its_regular_files_without_caches_or_hidden_ones(tmp_path):
    assert read_agent(str(_agent(tmp_path))) == {"lib/util.py": b"y = 2\n", "main.py": b"x = 1\n"}


@pytest.mark.parametrize("make", [
    lambda f, host: os.symlink(host, f / "stolen.txt"),
    lambda f, host: os.symlink(host.parent, f / "lib" / "hostdir"),
    lambda f, host: os.mkfifo(f / "pipe"),
], ids=["file link", "folder link", "fifo"])
def test_links_and_special_files_are_refused_naming_the_path(tmp_path, make):
    folder = _agent(tmp_path)
    host = tmp_path / "host-secret.txt"
    host.write_text("a host file\n")
    make(folder, host)
    with pytest.raises(ConfigError, match=r"initial_agents.*(symbolic link|not a regular file)"):
        read_agent(str(folder))


@pytest.mark.parametrize(("name", "shown"), [
    (b"lib\\util.py", "lib\\\\util.py"),  # a backslash: a folder separator on Windows
    (b"two\nlines.py", "two\\nlines.py"),
    (b"latin1-\xe9.py", "latin1-\\\\udce9.py"),  # bytes that are not UTF-8: the store could not hold the name
], ids=["backslash", "newline", "not UTF-8"])
def test_a_file_name_that_is_no_genome_path_is_refused_naming_the_folder_and_the_path(tmp_path, name, shown):
    folder = _agent(tmp_path)
    with open(os.path.join(os.fsencode(folder), name), "wb") as f:
        f.write(b"z = 3\n")
    with pytest.raises(ConfigError) as info:
        read_agent(str(folder))
    message = str(info.value)
    assert "initial_agents" in message and repr(str(folder)) in message and shown in message, message


def test_a_campaign_with_a_linked_agent_is_refused_before_any_file_is_made(tmp_path):
    folder = _agent(tmp_path)
    os.symlink("/etc/hostname", folder / "hostname")
    db = tmp_path / "c.db"
    cfg = load_config(None, {"task": toy("plain"), "db": str(db), "mutation.initial_agents": [str(folder)],
                             "sandbox.kind": "inprocess"})
    with pytest.raises(ConfigError, match="'hostname'"):
        Campaign(cfg)
    assert not db.exists()
