"""Shared fixtures: one Ray instance for the whole session, campaign helpers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from archive_db.sql import migrations, split_sql

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "tests" / "tasks" / "toy"


def toy(variant: str = "plain") -> str:
    """The task name of a toy-task variant (a user task given by path)."""
    return f"{TOY}:{variant}"


@pytest.fixture(scope="session")
def ray_address():
    """Start Ray once per test session (about 5 s); campaigns in this process and in subprocesses share it."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # address="local": a Ray of this test session's own, never another run's that happens to be up
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    yield address
    ray.shutdown()


@pytest.fixture
def cli_env():
    """Environment for running the CLI in a subprocess (the package importable from the checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def python():
    return sys.executable


SANDBOX_IMAGE = "openended-sandbox:latest"


def _required(what: str, problem: str | None) -> None:
    """Skip the test by hand when ``what`` cannot run here (``problem`` says why); fail under CI=true."""
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {what} cannot run: {problem}")
        pytest.skip(f"{what} unavailable: {problem}")


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker engine and the sandbox image; skip without them by hand, fail under CI=true."""
    from openended.sandbox.engine import docker_problem

    _required("the Docker sandbox", docker_problem(SANDBOX_IMAGE))
    return SANDBOX_IMAGE


@pytest.fixture
def upstream():
    """A scripted OpenAI-compatible server (tests/llm/llm_fault_server.py) answering every request alike."""
    from llm_fault_server import FaultServer, ok

    with FaultServer(default=ok("scripted answer", usage=(10, 5))) as server:
        yield server


@pytest.fixture(scope="session")
def cluster():
    """A head on the host and two worker nodes in containers that share nothing with the driver but Ray
    (tests/cluster/cluster_nodes.py), one for the whole session."""
    from cluster_nodes import own_cluster

    with own_cluster(2) as c:
        yield c


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded model's packages (llama-cpp-python and the Gemma weights); skip without them by hand,
    fail under CI=true."""
    from openended.llm.local import local_model_unavailable

    _required("the embedded model", local_model_unavailable())


def labelled_image(tag: str, **labels: str) -> str:
    """A one-file image under ``tag`` with the sandbox's version label and ``labels`` (``docker import``):
    what the probes and checks read of an image, without building one. Returns its id."""
    import io
    import tarfile

    from openended.sandbox.engine import IMAGE_VERSION, VERSION_LABEL

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    changes = [f"--change=LABEL {k}={v}" for k, v in {VERSION_LABEL: IMAGE_VERSION, **labels}.items()]
    return subprocess.run(["docker", "import", *changes, "-", tag], input=data.getvalue(), check=True,
                          capture_output=True).stdout.decode().strip()


def containers_left(label: str) -> list[str]:
    """The ids of the containers, running or not, that carry the campaign label ``label``."""
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=openended.campaign={label}"],
                          capture_output=True, text=True, check=True).stdout.split()


def count_in(db: Path | str, sql: str, *, timeout: float = 5.0) -> int:
    """One count from a campaign's store, read-only while its driver writes; 0 before the file or its table
    exists (any other error is raised: a count that read nothing must not pass for zero)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "unable to open" in str(exc):
            return 0
        raise


def kill_when(proc: subprocess.Popen, finished, target: int, *, seconds: float = 120.0) -> None:
    """SIGKILL the campaign ``proc`` once ``finished()`` (its finished children) reaches ``target``; the test
    fails if the campaign ended first (the kill would test nothing)."""
    deadline = time.monotonic() + seconds
    while finished() < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the campaign ended before the kill: " + (proc.stdout.read() if proc.stdout else "")
    proc.kill()
    proc.wait(timeout=30)


def resume_cli(python: str, env: dict, db: Path, ray_address: str) -> None:
    """``openended resume DB`` on the test session's Ray; the test fails unless it finishes."""
    resumed = subprocess.run([python, "-m", "openended", "resume", str(db), "--ray-address", ray_address, "--quiet"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


# ---- a store as an older openended left it

def _database_at(path: Path, version: int, descriptor_schema: dict | None = None) -> sqlite3.Connection:
    """A new database at ``path`` with migrations 1..``version`` applied and its run row; an open connection
    (autocommit) for the test to add the rows of that version's schema."""
    con = sqlite3.connect(path, isolation_level=None)
    for number, _name, script in migrations()[:version]:
        for statement in split_sql(script):
            con.execute(statement)
        con.execute(f"PRAGMA user_version = {number}")
    con.execute("INSERT INTO runs(id, name, task, seed, created_at, updated_at, schema_version, descriptor_schema) "
                "VALUES (1, 'old', 'toy', 0, 0, 0, ?, ?)",
                (version, json.dumps(descriptor_schema or {"names": ["x"]})))
    return con


@pytest.fixture
def database_at() -> Callable[..., sqlite3.Connection]:
    """``database_at(path, version, descriptor_schema=None)``: a database as schema ``version`` left it."""
    return _database_at
