"""Which nodes of a Ray cluster the docker sandbox can run on, kept up to date as nodes join and die.

A campaign with the docker sandbox sends evaluations only to nodes whose probe
(:func:`openended.cluster.check.probe`: the Docker engine answers, the sandbox image is there at this
openended's version, carrying the campaign's numpy) found nothing wrong. The campaign's numpy is its driver's
image's (a node's image built under another numpy would make a child's result depend on where it ran), or,
where the driver has none, the first usable node's. :class:`UsableNodes` probes every alive node when the
campaign starts (waiting for the answers) and every node that joins later (without waiting: a joining node
gets work once its probe has answered), and forgets nodes that died. A node found unusable, at the start or
later (a worker there found its engine gone: :meth:`UsableNodes.engine_lost`), is probed again after
``reprobe_seconds``, then less and less often while it stays unusable: an engine started or restarted there
brings it back. Ray places the tasks itself among the nodes it is allowed (:meth:`UsableNodes.selector`: a
label selector on Ray's node id), so it still balances them. A node found unusable is named, with why, through
``note`` (again only when why changes), and named with None when it is usable again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from openended.cluster.check import (
    DRIVERS_IMAGE,
    PROBE_SECONDS,
    NodeReport,
    alive_nodes,
    numpy_mismatch,
    on_node,
    probe,
)

# How often the cluster's node list is read (a call to Ray's GCS) to find joined and dead nodes.
POLL_SECONDS = 2.0
# How soon a node found unusable is probed again (a probe is a Docker ping and an image lookup on that node);
# the wait doubles with each probe that finds it still unusable, up to REPROBE_MAX_SECONDS.
REPROBE_SECONDS = 15.0
REPROBE_MAX_SECONDS = 300.0
NODE_ID_CHARS = 8  # as openended.engine.nodes names a node: enough to tell apart the nodes of one cluster

Note = Callable[[str, str | None], None]
"""Receives (the node's name, why no evaluation goes there), or (the node's name, None) once it is usable again."""


def node_name(report: NodeReport) -> str:
    """A node as a person finds it: its address, the start of its Ray node id and its sandbox identity."""
    who = f"{report.address} {report.node_id[:NODE_ID_CHARS]}"
    return f"{who} ({report.identity})" if report.identity else who


class UsableNodes:
    """The alive nodes on which the docker sandbox can run (``image``), by Ray node id."""

    def __init__(self, image: str, note: Note | None = None, *, numpy: str | None = None,
                 probe_seconds: float = PROBE_SECONDS, poll_seconds: float = POLL_SECONDS,
                 reprobe_seconds: float = REPROBE_SECONDS):
        self.image = image
        self.numpy = numpy  # what every evaluation's image carries
        # where that numpy comes from: the driver's image, else the first node found usable (once one is)
        self._numpy_of: str | None = DRIVERS_IMAGE if numpy is not None else None
        self.note = note
        self.probe_seconds = probe_seconds
        self.poll_seconds = poll_seconds
        self.reprobe_seconds = reprobe_seconds
        self.usable: set[str] = set()
        self.cpus: dict[str, float] = {}  # node id -> its CPUs (a usable node of none takes no evaluation)
        self.unusable: dict[str, str] = {}  # node id -> why (the nodes' names are in the notes)
        self._reprobe_at: dict[str, float] = {}  # an unusable node -> when it is probed again
        self._misses: dict[str, int] = {}  # an unusable node -> probes in a row that found it so
        self._names: dict[str, str] = {}  # node id -> its name as the notes give it
        self.alive: frozenset[str] = frozenset()
        self.gone: set[str] = set()  # nodes Ray said died (its node list says so only 15-30 s later)
        self._probing: dict[Any, tuple[NodeReport, float]] = {}  # probe ref -> (its node, when it started)
        self._polled = -float("inf")
        self.started = False

    # ------------------------------------------------------------------ the campaign's side
    def start(self) -> None:
        """Probe every alive node and wait for the answers (up to ``probe_seconds``). Raises
        :class:`~openended.config.ConfigError` when no node can run the sandbox, saying why for each."""
        self.started = True
        self.refresh(force=True)
        deadline = time.monotonic() + self.probe_seconds
        while self._probing and time.monotonic() < deadline:
            self._collect(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        self._collect(timeout=0)
        if not self.can_evaluate:
            self.wait_usable(0)

    @property
    def evaluators(self) -> frozenset[str]:
        """The usable nodes with a CPU (an evaluation takes one; a head of no CPU only runs mutations)."""
        return frozenset(node for node in self.usable if self.cpus.get(node, 0) > 0)

    @property
    def can_evaluate(self) -> bool:
        return bool(self.evaluators)

    def wait_usable(self, seconds: float) -> None:
        """Until some alive node with a CPU can run the sandbox (probing nodes that join meanwhile); after
        ``seconds`` without one, :class:`~openended.config.ConfigError` naming every node and its problem."""
        from openended.config import ConfigError

        deadline = time.monotonic() + seconds
        while not self.can_evaluate and time.monotonic() < deadline:
            self.refresh(force=True)
            wait = min(1.0, max(0.0, deadline - time.monotonic()))
            if self._probing:
                self._collect(timeout=wait)
            else:  # nothing to hear from: the next look at the node list in a second
                time.sleep(wait)
        if not self.can_evaluate:
            why = [f"{node[:NODE_ID_CHARS]}: {problem}" for node, problem in self.unusable.items()]
            why += [f"{node[:NODE_ID_CHARS]}: usable, but has no CPU" for node in self.usable]
            raise ConfigError(f"key 'sandbox.kind': no alive node of the cluster with a CPU can run the docker "
                              f"sandbox ({'; '.join(why) or 'no node answered'})")

    def died(self, node_id: str) -> None:
        """Ray reported ``node_id`` dead (a task's NodeDiedError): no more tasks go there."""
        self.gone.add(node_id)
        self.usable.discard(node_id)
        self.alive = self.alive - {node_id}

    def engine_lost(self, node_id: str, problem: str) -> None:
        """A worker on ``node_id`` found its Docker engine gone (``problem``): no more evaluations go there
        until a probe finds it usable again."""
        self.usable.discard(node_id)
        self._misses[node_id] = 0  # it worked a moment ago: the next probe soon
        self._unusable(node_id, self._names.get(node_id, node_id[:NODE_ID_CHARS]), problem)

    def selector(self) -> dict[str, str]:
        """Ray's label selector that keeps a task on the usable nodes (Ray balances among them)."""
        return {"ray.io/node-id": f"in({','.join(sorted(self.usable))})"}

    def refresh(self, *, force: bool = False) -> bool:
        """Read the node list (at most every ``poll_seconds`` unless ``force``), probe nodes that joined, take
        the probes that answered, forget dead nodes. Returns whether the usable set changed."""
        before = frozenset(self.usable)
        now = time.monotonic()
        if force or now - self._polled >= self.poll_seconds:
            self._polled = now
            reports = alive_nodes()
            self.alive = frozenset(r.node_id for r in reports) - self.gone
            self.usable &= self.alive
            self.unusable = {node: why for node, why in self.unusable.items() if node in self.alive}
            probing = {r.node_id for r, _ in self._probing.values()}
            known = self.usable | set(self.unusable) | probing
            for report in reports:
                self.cpus[report.node_id] = report.cpus
                node = report.node_id
                again = node in self.unusable and node not in probing and now >= self._reprobe_at.get(node, 0.0)
                if again or node not in known | self.gone:
                    self._probing[on_node(probe, node, self.image)] = (report, now)
        self._collect(timeout=0)
        return frozenset(self.usable) != before

    # ------------------------------------------------------------------ probes
    def _collect(self, timeout: float) -> None:
        import ray

        if not self._probing:
            return
        done, _ = ray.wait(list(self._probing), num_returns=len(self._probing), timeout=timeout)
        for ref in done:
            report, _ = self._probing.pop(ref)
            try:
                found = ray.get(ref)
            except Exception as exc:  # the node died under its probe, or the probe could not run there
                if report.node_id in self.alive:
                    text = str(exc).strip().splitlines()
                    self._judge(report, f"its probe failed: {(text[0] if text else type(exc).__name__)[:300]}")
                continue
            for key, value in found.items():
                setattr(report, key, value)
            self._judge(report, report.problem)
        now = time.monotonic()
        for ref, (report, began) in list(self._probing.items()):
            if now - began > self.probe_seconds:
                ray.cancel(ref, force=True)
                del self._probing[ref]
                self._judge(report, f"its probe had no answer within {self.probe_seconds:g}s")

    def _judge(self, report: NodeReport, problem: str | None) -> None:
        node = report.node_id
        name = self._names.setdefault(node, node_name(report))  # one name per node: the campaign keys on it
        if problem is None and self._numpy_of is None:
            self.numpy, self._numpy_of = report.image_numpy, f"the image of the first node used ({name})"
        elif problem is None and report.image_numpy != self.numpy:
            problem = numpy_mismatch(report.image_numpy, self.numpy, self._numpy_of or DRIVERS_IMAGE)
        if problem is not None:
            self._misses[node] = self._misses.get(node, 0) + 1
            self._unusable(node, name, problem)
            return
        self._misses.pop(node, None)
        self.usable.add(node)
        if self.unusable.pop(node, None) is not None and self.note is not None:
            self.note(name, None)

    def _unusable(self, node: str, name: str, problem: str) -> None:
        wait = self.reprobe_seconds * 2 ** max(0, self._misses.get(node, 1) - 1)
        self._reprobe_at[node] = time.monotonic() + min(REPROBE_MAX_SECONDS, wait)
        if self.unusable.get(node) == problem:
            return
        self.unusable[node] = problem
        if self.note is not None:
            self.note(name, problem)
