"""The driver's files on worker nodes (openended.engine.node_files): packed, shipped through Ray, cached
per node by content hash; a worker loads the task from its node's copy and runs the driver's runner."""

from __future__ import annotations

import shutil

import pytest
from conftest import TOY

from openended.engine import node_files
from openended.engine.jobs import Breed
from openended.sandbox import SandboxSpec, jobdir
from openended.tasks import load_task


def test_pack_is_the_folder_as_the_sandboxes_copy_it_and_its_hash_follows_its_content(tmp_path):
    task = tmp_path / "my-task"
    shutil.copytree(TOY, task)
    (task / "__pycache__").mkdir(exist_ok=True)
    (task / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    (task / ".secret").write_text("not shipped")
    (task / "data").mkdir()
    (task / "data" / "table.csv").write_text("a,b\n")
    bundle = node_files.pack(task)
    assert bundle["name"] == "my-task"
    assert set(bundle["files"]) == {"task.toml", "evaluate.py", "seed/weights.npy", "data/table.csv"}
    assert bundle["runner"] == jobdir.runner_source()
    assert node_files.pack(task)["digest"] == bundle["digest"]  # the same content, the same hash
    (task / "data" / "table.csv").write_text("a,b\n1,2\n")
    assert node_files.pack(task)["digest"] != bundle["digest"]


def test_a_worker_loads_a_shipped_task_from_its_node_cache_after_the_driver_folder_is_gone(
        tmp_path, monkeypatch, ray_address):
    import ray

    task_dir = tmp_path / "driver-only"
    shutil.copytree(TOY, task_dir)
    shipped = node_files.ship(load_task(f"{task_dir}:plain").ref)
    assert shipped.size > 0 and shipped.digest == node_files.pack(task_dir)["digest"]
    shutil.rmtree(task_dir)  # from now on only Ray has it

    @ray.remote(num_cpus=1, max_retries=0)
    def on_worker(ref: node_files.ShippedTask, work_dir: str) -> tuple[str, str, str, bool]:
        import os

        os.environ["OPENENDED_WORK_DIR"] = work_dir
        from openended.engine.node_files import load_ref
        from openended.engine.worker import run_jobs
        from openended.sandbox import jobdir

        task = load_ref(ref)
        [result] = run_jobs(ref, [Breed(1, 7, "random")], SandboxSpec(kind="process"))
        return task.name, str(task.root), jobdir._shipped_runner or "", result.failed

    work = tmp_path / "node"
    name, root, runner, failed = ray.get(on_worker.remote(shipped, str(work)))
    assert name == "toy-plain"  # the task.toml's name: the same task, wherever its folder lies
    assert root == str(work / f"openended-node-{__import__('os').getuid()}" / "tasks" / shipped.digest / "driver-only")
    assert runner == jobdir.runner_source()  # the driver's runner runs the node's sandboxes
    assert not failed
    # the node's copy: unpacked once, by content hash; a second load finds it without the object store
    monkeypatch.setenv("OPENENDED_WORK_DIR", str(work))
    entry = node_files.localize(shipped)
    assert (entry / "driver-only" / "task.toml").is_file() and (entry / node_files.RUNNER_FILE).is_file()
    assert node_files.localize(node_files.ShippedTask("gone", None, digest=shipped.digest)) == entry


def test_a_plain_reference_loads_from_its_path():
    task = node_files.load_ref(load_task(f"{TOY}:plain").ref)
    assert task.root == TOY.resolve()


def test_a_bundle_that_arrived_changed_is_refused(tmp_path, monkeypatch, ray_address):
    import ray

    monkeypatch.setenv("OPENENDED_WORK_DIR", str(tmp_path))
    bundle = node_files.pack(TOY)
    tampered = {**bundle, "files": {**bundle["files"], "evaluate.py": b"print('not the driver's')"}}
    ref = node_files.ShippedTask(str(TOY), "plain", digest=bundle["digest"], bundle=ray.put(tampered))
    with pytest.raises(RuntimeError, match="arrived changed"):
        node_files.localize(ref)


def test_a_campaigns_templates_reach_the_worker_through_ray(tmp_path, ray_address):
    import ray

    from openended.engine.jobs import Mutate

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "diff.txt").write_text("my own diff prompt {code}")
    shipped: dict = {}
    job = node_files.ship_paths(Mutate(5, 1, "llm_diff", templates_dir=str(templates)), shipped)
    assert job.templates_dir == str(templates.resolve()) and isinstance(job.templates_dir, node_files.ShippedPath)
    assert node_files.ship_paths(Mutate(6, 2, "llm_diff", templates_dir=str(templates)), shipped).templates_dir \
        is job.templates_dir  # one bundle per folder and session
    shutil.rmtree(templates)  # from now on only Ray has it

    @ray.remote(num_cpus=1, max_retries=0)
    def on_worker(job: Mutate, work_dir: str) -> str:
        import os

        os.environ["OPENENDED_WORK_DIR"] = work_dir
        from openended.engine.node_files import local_path
        from openended.mutation.prompts import template_path

        return template_path("diff", local_path(job.templates_dir)).read_text()

    assert ray.get(on_worker.remote(job, str(tmp_path / "node"))) == "my own diff prompt {code}"
    assert node_files.local_path("/a/plain/path") == "/a/plain/path" and node_files.local_path(None) is None
