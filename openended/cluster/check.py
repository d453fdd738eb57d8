"""``openended cluster check``: the sandbox on every alive node of a Ray cluster.

Each alive node runs a probe pinned to it (a zero-CPU Ray task with a hard node affinity) that reports
its Docker engine's version, whether the sandbox image is there, its version and numpy labels, and why
the docker sandbox cannot run there (:func:`openended.sandbox.engine.docker_problem`). With ``load``, the
driver saves its own copy of the image (``docker save``), puts it into Ray's object store once, and a
task pinned to each node whose engine answers but lacks the image (or has another version, or another
numpy than the driver's copy) loads it into that engine: no registry is needed. Nodes that share one
engine (``engine_id``) load it once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openended.sandbox.engine import IMAGE_VERSION

PROBE_SECONDS = 120.0
LOAD_SECONDS = 900.0


@dataclass
class NodeReport:
    """One alive node as the probe found it; ``problem`` is None when the docker sandbox can run there."""

    node_id: str
    address: str
    head: bool
    cpus: float
    identity: str = ""  # the node's name for its sandbox containers (openended.sandbox.engine.node_identity)
    engine: str | None = None  # the Docker engine's version; None: no engine answers
    engine_id: str | None = None
    image_version: str | None = None  # the image's openended.sandbox.version label; None: no such image
    image_numpy: str | None = None  # the numpy version the image carries (its label)
    problem: str | None = None
    loaded: bool = False  # the image was loaded onto it from the driver's copy by this check

    @property
    def ok(self) -> bool:
        return self.problem is None


def probe(image: str) -> dict[str, Any]:
    """What this node has (runs on the node)."""
    from openended.sandbox.engine import NUMPY_LABEL, VERSION_LABEL, client, docker_problem, node_identity

    found: dict[str, Any] = {"identity": node_identity(), "engine": None, "engine_id": None, "image_version": None,
                             "image_numpy": None}
    try:
        api = client(timeout=10)
        found["engine"] = str(api.version().get("Version"))
        found["engine_id"] = str(api.info().get("ID") or "") or None
        try:
            labels = api.images.get(image).labels or {}
            found["image_version"], found["image_numpy"] = labels.get(VERSION_LABEL), labels.get(NUMPY_LABEL)
        except Exception:  # no such image
            pass
    except Exception:  # no engine answers (docker_problem says how)
        pass
    found["problem"] = docker_problem(image)
    return found


def load_image(data: bytes, image: str) -> dict[str, Any]:
    """Load a ``docker save`` archive into this node's engine, then probe again (runs on the node)."""
    from openended.sandbox.engine import client

    client(timeout=int(LOAD_SECONDS)).images.load(data)
    return probe(image)


def save_image(image: str) -> bytes:
    """The driver's copy of ``image`` as a ``docker save`` archive."""
    from openended.sandbox.engine import client

    return b"".join(client(timeout=int(LOAD_SECONDS)).images.get(image).save(named=True))


def on_node(fn: Callable[..., Any], node_id: str, *args: Any) -> Any:
    """``fn(*args)`` as a zero-CPU Ray task on the node ``node_id`` and nowhere else; returns its ref."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    pinned = ray.remote(fn).options(num_cpus=0, max_retries=0,
                                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    return pinned.remote(*args)


def alive_nodes() -> list[NodeReport]:
    import ray

    reports = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        head = any(k.startswith("node:__internal_head__") for k in resources)
        reports.append(NodeReport(node["NodeID"], f"{node.get('NodeManagerAddress')}:{node.get('NodeManagerPort')}",
                                  head, float(resources.get("CPU", 0))))
    return reports


DRIVERS_IMAGE = "the driver's image"


def numpy_mismatch(found: str | None, expected: str | None, whose: str = DRIVERS_IMAGE) -> str:
    """Why a node whose image carries numpy ``found`` cannot evaluate a campaign's children: ``whose`` image
    carries ``expected``, the numpy of every evaluation."""
    return (f"its image carries numpy {found or 'of no known version (no label)'}, {whose} carries numpy "
            f"{expected or 'of no known version (no label)'}: a child's result would depend on the node it ran on "
            f"(numpy versions round differently); load the driver's image onto it with `openended cluster check`, "
            f"or rebuild it there under numpy {expected}")


def check_cluster(image: str, *, load: bool = False, image_data: Callable[[], bytes] | None = None,
                  timeout: float = PROBE_SECONDS, numpy: str | None = None) -> list[NodeReport]:
    """Probe every alive node of the cluster this process has joined. ``numpy``: the numpy the driver's image
    carries (None: not compared). With ``load``, load the image onto the nodes whose engine lacks it, has
    another version of it, or has one carrying another numpy (``image_data``: the archive to load, by default
    the driver's ``docker save``). A node that does not answer within ``timeout``, or whose image still carries
    another numpy, is reported with why."""
    import ray

    reports = alive_nodes()
    pending = {on_node(probe, r.node_id, image): r for r in reports}
    _collect(pending, timeout, "probe")
    if load:
        lacking: dict[str, list[NodeReport]] = {}
        for r in reports:
            other_numpy = numpy is not None and r.image_numpy != numpy
            if r.engine is not None and (r.image_version != IMAGE_VERSION or other_numpy):
                lacking.setdefault(r.engine_id or r.node_id, []).append(r)
        if lacking:
            data_ref = ray.put((image_data or (lambda: save_image(image)))())
            loads = {on_node(load_image, group[0].node_id, data_ref, image): group[0] for group in lacking.values()}
            _collect(loads, LOAD_SECONDS, "image load")
            for group in lacking.values():
                for r in group:
                    if r is not group[0]:  # the same engine: what it has now
                        r.image_version, r.image_numpy = group[0].image_version, group[0].image_numpy
                        r.problem = group[0].problem
                    r.loaded = group[0].problem is None
    for r in reports:
        if r.problem is None and numpy is not None and r.image_numpy != numpy:
            r.problem = numpy_mismatch(r.image_numpy, numpy)
    return reports


def _collect(pending: dict[Any, NodeReport], timeout: float, what: str) -> None:
    import ray

    done, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
    for ref in done:
        report = pending[ref]
        try:
            found = ray.get(ref)
        except Exception as exc:  # the node died, or the task could not run there
            report.problem = f"{what} failed: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc}"
            continue
        for key, value in found.items():
            setattr(report, key, value)
    for ref in late:
        ray.cancel(ref, force=True)
        pending[ref].problem = f"{what}: no answer within {timeout:g}s"


def as_dicts(reports: list[NodeReport]) -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(r), "ok": r.ok} for r in reports]
