"""The cluster examples (openended/cluster/examples/) are what Ray's launcher and KubeRay take, and carry
what openended needs on every node: the ``ray up`` file passes the launcher's own preparation and schema,
the RayCluster names the keys KubeRay reads, and both set the Python version rule, install openended and
give the sandbox a Docker engine."""

from __future__ import annotations

import copy
from importlib import resources

import yaml

EXAMPLES = resources.files("openended.cluster") / "examples"
PYTHON_RULE = "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL"


def _load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_the_ray_up_file_is_what_rays_launcher_accepts_for_machines_you_own():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("ray-up-local.yaml")
    # what `ray up` does before it touches a machine (ray.autoscaler._private.commands._bootstrap_config)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    provider = config["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
    assert prepared["available_node_types"]["local.cluster.node"]["max_workers"] == len(provider["worker_ips"])
    assert config["auth"]["ssh_user"] and config["auth"]["ssh_private_key"]
    setup = "\n".join(config["setup_commands"])
    assert "openended-dist" in next(iter(config["file_mounts"])) and "openended-*.whl" in setup
    assert "docker info" in setup  # a machine without a usable engine fails its setup, not a campaign
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    assert any("ray start --head" in c and "--num-cpus=0" in c for c in head)
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in workers)
    for command in (*head, *workers):
        if "ray start" in command:
            assert f"{PYTHON_RULE}=minor" in command


def test_a_bad_ray_up_file_is_refused_by_the_same_check():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("ray-up-local.yaml")
    config["setup_command"] = config.pop("setup_commands")  # a misspelt key
    try:
        validate_config(prepare_config(config))
    except Exception as exc:
        assert "setup_command" in str(exc)
    else:
        raise AssertionError("the launcher's check accepted a misspelt key")


def test_the_raycluster_names_what_kuberay_reads_and_gives_every_pod_an_engine():
    cluster = _load("kuberay-raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["rayVersion"].count(".") == 2
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # evaluations go to the workers
    groups = spec["workerGroupSpecs"]
    assert groups and all({"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}
                          <= set(g) for g in groups)
    for pod in (head["template"]["spec"], *(g["template"]["spec"] for g in groups)):
        volumes = {v["name"] for v in pod["volumes"]}
        ray_container, *sidecars = pod["containers"]
        assert ray_container["image"] and ray_container["name"].startswith("ray-")
        env = {e["name"]: e["value"] for e in ray_container["env"]}
        assert env[PYTHON_RULE] == "minor"
        engine = next(c for c in sidecars if c["image"].startswith("docker:") and c["image"].endswith("dind"))
        assert engine["securityContext"]["privileged"] is True
        assert engine["args"][0] == "dockerd" and not any("tcp://" in a for a in engine["args"])
        socket = env["DOCKER_HOST"].removeprefix("unix://")
        assert f"--host=unix://{socket}" in engine["args"]
        for container in (ray_container, engine):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert set(mounts.values()) <= volumes
            # the worker writes job folders that the engine mounts: the same folder at the same path in both
            assert mounts[env["OPENENDED_WORK_DIR"]] == "sandbox-work"
            assert any(socket.startswith(path + "/") for path in mounts)
