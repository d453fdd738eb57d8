"""The maze campaign on a multi-node Ray cluster of one machine: children per second on 1 node and on 3
nodes of the same CPUs, and the bytes that cross Ray per child (issue 14).

The cluster is ``ray.cluster_utils.Cluster`` (no privileges, no containers): a head with no CPU (the
driver's node, where the store is) and worker nodes, each a raylet with its own object store, so every
job and result crosses between nodes over TCP as on a real cluster, only on loopback. The same
maze-medium campaign runs on 1 node of 3 CPUs and on 3 nodes of 1 CPU each, in the order 1, 3, 3, 1 (so
that a machine load that drifts during the run weighs on both alike; ``--repeats``): equal CPUs, so the
ratio of the two is what spreading the work over nodes costs the loop (scheduling across raylets, transfers
between object stores), not a speed-up (all nodes share this machine's cores). Each figure is the mean of its
runs; ``runs`` lists them in order.

``bytes_sent_per_child``: what crosses Ray per child in a third, shorter campaign on the 3 nodes, each
task's arguments (the task reference, the jobs with their parents' genomes, the sandbox) and its returned
results (the child's genome, result, evaluation record) serialised by Ray's own serialiser, summed over
tasks and divided by the children. Ray's task header (ids, the function's descriptor) comes on top, once
per task. The task folder itself crosses once per node per campaign (``task_bundle_bytes``).

    nice -n 19 python bench/cluster.py --out cluster.json      # 1, 3, 3, 1 nodes, 3,000 children each (minutes)
    python bench/cluster.py --smoke --out /tmp/x.json          # CI: 1 then 3 nodes, 400 children each, ~a minute
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ scripts import each other
from scale_share import engine_children_per_s  # noqa: E402

CPUS = 3  # on each layout: 1 node of 3, or 3 nodes of 1


@dataclass
class Layout:
    """One campaign's figures on one set of worker nodes."""

    children_per_s: float
    seconds: float
    children: int
    per_node: dict[str, int]


@dataclass
class Meter:
    """What the campaign's Ray tasks carried, in bytes as Ray serialises them."""

    job_bytes: int = 0
    result_bytes: int = 0
    children: int = 0
    tasks: int = 0
    bundle_bytes: int = 0


def _wait_cpus(cpus: int, seconds: float = 120.0) -> None:
    """Until the cluster's alive nodes hold exactly ``cpus`` CPUs (a node removed or added has registered)."""
    import ray

    deadline = time.monotonic() + seconds
    while int(ray.cluster_resources().get("CPU", 0)) != cpus:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not settle at {cpus} CPUs: {ray.cluster_resources()}")
        time.sleep(0.2)


@contextmanager
def worker_nodes(cluster: Any, cpus_each: list[int]) -> Iterator[list[Any]]:
    """Worker nodes of ``cpus_each`` CPUs joined to ``cluster`` for the block, removed after it."""
    nodes = [cluster.add_node(num_cpus=n) for n in cpus_each]
    try:
        cluster.wait_for_nodes()
        _wait_cpus(sum(cpus_each))
        yield nodes
    finally:
        for node in nodes:
            cluster.remove_node(node)
        _wait_cpus(0)


def run_maze(db: Path, children: int, address: str, settings: dict[str, Any]) -> Layout:
    """One maze-medium campaign of ``children`` on the cluster at ``address``; its steady children/s (after
    the first quarter, at most 500: imports, workers starting, the roots) from its store's finish times."""
    from openended.config import load_config
    from openended.engine import Campaign
    from openended.status import campaign_status

    overrides = {"task": "maze-medium", "db": str(db), "seed": 0, "budget.max_children": children,
                 "budget.stop_at_target": False, "ray_address": address, "stats_every_seconds": 60.0, **settings}
    started = time.monotonic()
    summary = Campaign(load_config(None, overrides)).run()
    seconds = time.monotonic() - started
    if summary.status != "finished" or summary.children_failed:
        raise RuntimeError(f"the maze campaign did not finish cleanly: {summary}")
    return Layout(engine_children_per_s(db, min(500, children // 4)), seconds, summary.children_done,
                  campaign_status(db).children_per_node)


@contextmanager
def metered(meter: Meter) -> Iterator[None]:
    """RayExecutor's tasks measured as they go out and come back: each argument and each task's results
    serialised by Ray's serialiser (what Ray puts on the wire, less its task header)."""
    from ray._private.worker import global_worker

    from openended.engine import dispatch

    context = global_worker.get_serialization_context()

    def size(value: Any) -> int:
        n = context.serialize(value).total_bytes
        context.get_and_clear_contained_object_refs()  # the task bundle's ref: noted, not sent by this measure
        return int(n)

    evaluate, result = dispatch.RayExecutor.evaluate, dispatch.RayExecutor.result

    def measured_evaluate(self: Any, jobs: list[Any]) -> Any:
        meter.job_bytes += sum(size(arg) for arg in (self.task, jobs, self.sandbox))
        meter.children += len(jobs)
        meter.tasks += 1
        meter.bundle_bytes = meter.bundle_bytes or _bundle_bytes(self.task)
        return evaluate(self, jobs)

    def measured_result(self: Any, handle: Any) -> Any:
        results = result(self, handle)
        meter.result_bytes += size(results)
        return results

    dispatch.RayExecutor.evaluate = measured_evaluate  # type: ignore[method-assign]
    dispatch.RayExecutor.result = measured_result  # type: ignore[method-assign]
    try:
        yield
    finally:
        dispatch.RayExecutor.evaluate, dispatch.RayExecutor.result = evaluate, result  # type: ignore[method-assign]


_bundle_sizes: dict[str, int] = {}


def _bundle_bytes(task: Any) -> int:
    """The serialised size of the task folder's bundle (what each node fetches once), measured once."""
    import ray
    from ray._private.worker import global_worker

    if task.digest not in _bundle_sizes:
        context = global_worker.get_serialization_context()
        _bundle_sizes[task.digest] = int(context.serialize(ray.get(task.bundle)).total_bytes)
    return _bundle_sizes[task.digest]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="maze children/s on 1 and 3 Ray nodes of one machine; bytes per child")
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="400 children a layout: checks the script; same keys")
    ap.add_argument("--children", type=int, default=3000, help="children per campaign")
    ap.add_argument("--repeats", type=int, default=2, help="campaigns per layout, in the order 1, 3, 3, 1, ...")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-in-flight", type=int, default=6, help="two tasks a CPU: no CPU waits on the driver")
    ap.add_argument("--staleness", type=int, default=96, help="max_in_flight x batch_size: every task can go out")
    ap.add_argument("--sandbox", default="inprocess",
                    help="inprocess (default: Ray's share of the time at its largest), process or docker")
    args = ap.parse_args(argv)
    children = 400 if args.smoke else args.children
    repeats = 1 if args.smoke else args.repeats
    order = [n for i in range(repeats) for n in ((1, CPUS) if i % 2 == 0 else (CPUS, 1))]
    metered_children = 200 if args.smoke else max(200, children // 5)
    settings = {"batch_size": args.batch_size, "max_in_flight": args.max_in_flight, "staleness": args.staleness,
                "sandbox.kind": args.sandbox}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    load_before = os.getloadavg()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    meter = Meter()
    runs: list[tuple[int, Layout]] = []
    try:
        ray.init(address=cluster.address, include_dashboard=False, logging_level=logging.ERROR,
                 configure_logging=True, log_to_driver=False)
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
            for i, n_nodes in enumerate(order):
                with worker_nodes(cluster, [CPUS // n_nodes] * n_nodes):
                    runs.append((n_nodes, run_maze(Path(tmp) / f"run{i}.db", children, cluster.address, settings)))
                    if n_nodes == CPUS and not meter.tasks:
                        with metered(meter):
                            run_maze(Path(tmp) / "metered.db", metered_children, cluster.address, settings)
    finally:
        ray.shutdown()
        cluster.shutdown()
    one = sum(r.children_per_s for n, r in runs if n == 1) / repeats
    three = sum(r.children_per_s for n, r in runs if n == CPUS) / repeats
    result = {
        "maze_children_per_s_1_node": round(one, 1),
        "maze_children_per_s_3_nodes": round(three, 1),
        "ratio_3_nodes_to_1_node": round(three / one, 3) if one else None,
        "bytes_sent_per_child": round((meter.job_bytes + meter.result_bytes) / max(1, meter.children), 1),
        "bytes_job_per_child": round(meter.job_bytes / max(1, meter.children), 1),
        "bytes_result_per_child": round(meter.result_bytes / max(1, meter.children), 1),
        "bytes_per_task_children": round(meter.children / max(1, meter.tasks), 1),
        "task_bundle_bytes": meter.bundle_bytes,
        "children_per_node_3_nodes": next(r.per_node for n, r in runs if n == CPUS),
        "runs": [{"nodes": n, "children_per_s": round(r.children_per_s, 1), "seconds": round(r.seconds, 1)}
                 for n, r in runs],
        "children": children, "metered_children": meter.children, "cpus": CPUS,
        **{k.replace("sandbox.kind", "sandbox"): v for k, v in settings.items()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "smoke": args.smoke,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
