"""Which Ray node evaluated a child: the worker names its node on every result, the campaign counts them.

A worker tags each :class:`~openended.engine.jobs.ChildResult` it returns with its node's name
(:func:`this_node`: the node's IP, its hostname and the start of its Ray node id, which tells apart the
nodes of one machine). The recorder counts the evaluated children per name in the driver's state, in the
transaction that stores their outcomes, so the counts always add up to the outcomes stored, across kills
and resumes; ``openended status`` shows them. Nothing is added to a child's row in the store.
"""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ParamSpec

if TYPE_CHECKING:
    from openended.engine.jobs import ChildResult

P = ParamSpec("P")
NODE_ID_CHARS = 8  # of the node id's 56 hex digits: enough to tell apart the nodes of one cluster

_name: str | None = None


def this_node() -> str | None:
    """This worker's node, ``"IP (hostname) node-id-prefix"``; None outside a Ray worker (a test calling
    the worker's functions in its own process)."""
    global _name
    if _name is None:
        if "ray" not in sys.modules:  # no Ray in this process: not a worker (and no import just to find out)
            return None
        import ray

        if not ray.is_initialized():
            return None
        node_id = ray.get_runtime_context().get_node_id()
        _name = f"{ray.util.get_node_ip_address()} ({socket.gethostname()}) {node_id[:NODE_ID_CHARS]}"
    return _name


def this_node_id() -> str | None:
    """This worker's Ray node id (None outside a Ray worker)."""
    if this_node() is None:
        return None
    import ray

    return ray.get_runtime_context().get_node_id()


def tag_node(run: Callable[P, list[ChildResult]]) -> Callable[P, list[ChildResult]]:
    """``run`` whose results name the node that ran it (one string object for the batch: Ray's pickle sends
    it once per task, not once per child)."""

    @functools.wraps(run)
    def tagged(*args: P.args, **kwargs: P.kwargs) -> list[ChildResult]:
        results = run(*args, **kwargs)
        node = this_node()
        if node is not None:
            for r in results:
                r.node = node
        return results

    return tagged


def count_nodes(per_node: dict[str, int], results: Iterable[ChildResult]) -> None:
    """Add ``results``' children to ``per_node`` (a result with no node, e.g. a task lost with its worker, is
    not counted: no node evaluated it)."""
    for r in results:
        if r.node is not None:
            per_node[r.node] = per_node.get(r.node, 0) + 1
