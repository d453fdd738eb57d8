"""A job's agents travel inside its job.json (openended/sandbox/jobdir.py): the job folder holds one file,
the evaluator gets every agent's files byte for byte, and the runner still reads a job whose agents are
folders."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import containers_left
from hypothesis import given, settings
from hypothesis import strategies as st

from openended.sandbox import Limits, SandboxSpec
from openended.sandbox.docker_sandbox import DockerSandbox
from openended.sandbox.jobdir import runner_command, write_job
from openended.sandbox.process import ProcessSandbox
from sandboxes import runner

# Each agent's files as the evaluator got them: path -> sha256, in the feedback.
EVALUATE = textwrap.dedent("""
    import hashlib, json

    def evaluate_batch(genomes, args):
        return [{"fitness": float(len(g)), "descriptors": [0.0, 0.0],
                 "feedback": json.dumps({p: hashlib.sha256(d).hexdigest() for p, d in g.items()}),
                 "types": sorted({type(d).__name__ for d in g.values()})} for g in genomes]
    """)

AGENTS = [
    {"weights.npy": bytes(range(256)) * 5, "notes.txt": "text, not bytes"},
    {"pkg/sub/module.py": b"x = 1\n", "pkg/__init__.py": b"", "top.bin": b"\x00\xff\n\r"},
    {},
]


def _task(tmp_path: Path) -> Path:
    task = tmp_path / "task"
    task.mkdir()
    (task / "evaluate.py").write_text(EVALUATE)
    return task


def _expected(files: dict) -> dict[str, str]:
    return {p: hashlib.sha256(d if isinstance(d, bytes) else d.encode()).hexdigest() for p, d in files.items()}


def _check(outcome) -> None:
    assert outcome.failure_kind is None, outcome.reason
    assert [json.loads(r["feedback"]) for r in outcome.results] == [_expected(a) for a in AGENTS]
    assert all(r["types"] in ([], ["bytes"]) for r in outcome.results)


def test_a_job_folder_holds_one_file_with_every_agent(tmp_path):
    limits = Limits()
    job = write_job(tmp_path / "jobs", AGENTS, task_dir="/task", args={"a": 1}, limits=limits, work_root=None)
    assert [p.name for p in job.iterdir()] == ["job.json"]
    spec = json.loads((job / "job.json").read_text())
    assert spec["agents"] == ["agent0", "agent1", "agent2"] and len(spec["agent_files"]) == 3
    assert [sorted(a) for a in spec["agent_files"]] == [sorted(a) for a in AGENTS]


@given(st.lists(st.dictionaries(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}\.[a-z]{1,3}", fullmatch=True),
                                st.binary(max_size=2000), max_size=4), max_size=5))
@settings(max_examples=60, deadline=None)
def test_the_runner_reads_back_exactly_the_bytes_written(tmp_path_factory, agents):
    root = tmp_path_factory.mktemp("jobs")
    job = write_job(root, agents, task_dir="/task", args={}, limits=Limits(), work_root=None)
    assert runner._agents(runner.load_job(str(job)), str(job)) == agents


def test_the_process_sandbox_hands_the_evaluator_every_file(tmp_path):
    box = ProcessSandbox(SandboxSpec(kind="process", limits=Limits(timeout_s=20, memory_mb=1024)),
                         str(_task(tmp_path)))
    try:
        _check(box.evaluate(AGENTS, {}))
    finally:
        box.close()


def test_the_docker_sandbox_hands_the_evaluator_every_file(tmp_path, docker_engine):
    label = "test-job-files"
    spec = SandboxSpec(kind="docker", mode="pool", campaign_label=label, limits=Limits(timeout_s=20, memory_mb=256))
    box = DockerSandbox(spec, str(_task(tmp_path)))
    try:
        for _ in range(2):  # the second from the same serving runner
            _check(box.evaluate(AGENTS, {}))
    finally:
        box.close()
    assert containers_left(label) == []


@pytest.mark.parametrize("nested", [False, True])
def test_the_runner_still_reads_agents_given_as_folders(tmp_path, nested):
    """A job written the old way (a folder per agent, no agent_files) evaluates as before."""
    job = tmp_path / "job"
    for i, files in enumerate(AGENTS):
        folder = job / f"agent{i}"
        folder.mkdir(parents=True)
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    (job / "job.json").write_text(json.dumps({
        "task_dir": str(_task(tmp_path)), "agents": [f"agent{i}" for i in range(len(AGENTS))], "args": {},
        "timeout_s": 20, "output_bytes": 100000, "work_root": str(tmp_path)}))
    if nested:
        assert runner._agents(runner.load_job(str(job)), str(job)) == [
            {p: d if isinstance(d, bytes) else d.encode() for p, d in a.items()} for a in AGENTS]
        return
    proc = subprocess.run(runner_command(sys.executable, str(job)), capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert report["failure_kind"] is None, report
    assert [json.loads(r["feedback"]) for r in report["results"]] == [_expected(a) for a in AGENTS]


NICENESS = {"child.py": b"", "probe": b"niceness"}
NICE_EVALUATE = textwrap.dedent("""
    import json, os

    def evaluate_batch(genomes, args):
        seen = {"evaluation": os.getpriority(os.PRIO_PROCESS, 0), "runner": os.getpriority(os.PRIO_PROCESS, 1)}
        return [{"fitness": 0.0, "descriptors": [0.0, 0.0], "feedback": json.dumps(seen)} for _ in genomes]
    """)


def test_a_niced_worker_runs_its_containers_at_its_niceness(tmp_path, docker_engine, monkeypatch):
    """The engine would start the runner at its own niceness (0); a campaign run under nice keeps it."""
    import openended.sandbox.docker_sandbox as docker_sandbox

    task = tmp_path / "task"
    task.mkdir()
    (task / "evaluate.py").write_text(NICE_EVALUATE)
    label = "test-niceness"
    spec = SandboxSpec(kind="docker", mode="pool", campaign_label=label, limits=Limits(timeout_s=20, memory_mb=256))
    seen = {}
    for nice in (0, 7):
        monkeypatch.setattr(docker_sandbox, "niceness", lambda n=nice: n)
        box = DockerSandbox(spec, str(task))
        try:
            out = box.evaluate([NICENESS], {})
        finally:
            box.close()
        assert out.failure_kind is None, out.reason
        seen[nice] = json.loads(out.results[0]["feedback"])
    assert containers_left(label) == []
    assert seen[7]["runner"] == seen[7]["evaluation"] == seen[0]["runner"] + 7
    assert docker_sandbox.serve_command(0)[0] != "/usr/bin/nice"
