"""The gateway in a campaign: every evaluation job of a task that asks for it (``gateway = true`` in its
task.toml) gets a socket of its own, and its usage comes back with its result.

:class:`GatewayExecutor` wraps the campaign's executor (``openended.engine.dispatch.Executor``): it opens a
lease per evaluation job before the job goes out (the job carries the socket's path to the worker, whose
sandbox mounts it), and ends it when the result (or the loss) of that job comes in: the usage's tokens and
cost are added to the child's result (so to its row and the campaign's budgets), ``limit_hit`` goes into
the result's feedback, and ``on_usage`` stores the transcript. The socket is a file of this machine: a job
on another node reaches it through ``door`` (:mod:`openended.gateway.relay`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from openended.gateway.records import DIAGNOSIS_ENDPOINT, GatewayUsage
from openended.gateway.relay import GatewayRoute
from openended.gateway.server import Gateway, Lease
from openended.names import SELF_IMPROVE

log = logging.getLogger(__name__)


class GatewayExecutor:
    """An executor that gives each evaluation job the gateway, and each ``self_improve`` mutation (whose
    self-edit runs the parent agent); other mutations pass through unchanged."""

    def __init__(self, inner: Any, gateway: Gateway, on_usage: Callable[[GatewayUsage], None] | None = None, *,
                 door: Any = None, node_id: str | None = None):
        self.inner = inner
        self.gateway = gateway
        self.on_usage = on_usage
        self.door, self.node_id = door, node_id  # openended.gateway.relay: the way in from other nodes
        self._leases: dict[Hashable, list[Lease]] = {}

    def _route(self, lease: Lease) -> GatewayRoute:
        limits = self.gateway.limits
        return GatewayRoute(lease.socket_path, self.node_id, self.door,
                            max_connections=limits.max_connections_per_child, max_body_bytes=limits.max_body_bytes)

    def evaluate(self, jobs: list[Any]) -> Hashable:
        leases = [self.gateway.open(job.agent_id) for job in jobs]
        sent = [dataclasses.replace(job, gateway=self._route(lease)) for job, lease in zip(jobs, leases, strict=True)]
        try:
            handle = self.inner.evaluate(sent)
        except BaseException:
            self._end(leases)
            raise
        self._leases[handle] = leases
        return handle

    def mutate(self, job: Any, model: Any) -> Hashable:
        if job.operator != SELF_IMPROVE:
            return self.inner.mutate(job, model)
        lease = self.gateway.open(job.agent_id)  # the parent agent's self-edit run calls the model as the child
        try:
            handle = self.inner.mutate(dataclasses.replace(job, gateway=self._route(lease)), model)
        except BaseException:
            self._end([lease])
            raise
        self._leases[handle] = [lease]
        return handle

    def ready(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        return self.inner.ready(handles, timeout)

    def result(self, handle: Hashable) -> list[Any]:
        leases = self._leases.pop(handle, [])
        try:
            results = self.inner.result(handle)
        except BaseException:
            self._end(leases)
            raise
        usages = self._end(leases)
        for result in results:
            usage = usages.get(result.agent_id)
            if usage is None:
                continue
            result.tokens_in += usage.tokens_in
            result.tokens_out += usage.tokens_out
            result.cost += usage.cost
            if usage.limit_hit and result.fail_reason is None and isinstance(result.result, dict):
                # the child is recorded with the fact (its feedback, which the next prompt shows)
                note = f"[gateway] this agent reached its limit {usage.limit_hit}"
                feedback = result.result.get("feedback")
                result.result["feedback"] = f"{feedback}\n{note}" if isinstance(feedback, str) and feedback else note
        return results

    def cancel(self, handle: Hashable) -> None:
        self.inner.cancel(handle)
        self._end(self._leases.pop(handle, []))

    def _end(self, leases: list[Lease]) -> dict[int | str, GatewayUsage]:
        usages: dict[int | str, GatewayUsage] = {}
        for lease in leases:
            try:
                usage = self.gateway.end(lease)
            except Exception as exc:  # noqa: BLE001 - the gateway's trouble must not lose the child's result
                log.warning("gateway: ending agent %s's evaluation failed: %s", lease.agent_id, exc)
                continue
            usages[lease.agent_id] = usage
            if self.on_usage is not None:
                try:
                    self.on_usage(usage)
                except Exception as exc:  # noqa: BLE001 - a transcript that cannot be stored is logged, not fatal
                    log.warning("gateway: storing agent %s's transcript failed: %s", lease.agent_id, exc)
        return usages


def store_usage(db: Any) -> Callable[[GatewayUsage], None]:
    """``on_usage`` for a campaign's ArchiveDB: one ``transcripts`` row per evaluation."""

    def save(usage: GatewayUsage) -> None:
        if not isinstance(usage.agent_id, int):
            return
        db.add_transcript(usage.agent_id, calls=usage.calls, rejected=usage.rejected, tokens_in=usage.tokens_in,
                          tokens_out=usage.tokens_out, cost=usage.cost, limit_hit=usage.limit_hit,
                          entries=[dataclasses.asdict(entry) for entry in usage.transcript],
                          dropped=usage.transcript_dropped)

    return save


def forget_unfinished_transcripts(db: Any) -> int:
    """Drop the transcripts a resume will make again, so that nothing is recorded twice; returns how many.

    A gateway transcript is stored when its lease ends, before the child's step is committed; a kill
    between the two leaves a transcript whose work is redone on resume: every transcript of a child still
    ``proposed`` (its mutation runs again), and of a child ``mutated`` those after its genome was stored,
    except its diagnosis (its evaluation runs again).
    """
    with db.transaction():
        cursor = db.conn.execute(
            "DELETE FROM transcripts WHERE agent_id IN (SELECT id FROM agents WHERE status = 'proposed') "
            "OR (agent_id IN (SELECT id FROM agents WHERE status = 'mutated') "
            "AND created_at > (SELECT COALESCE(mutated_at, 0) FROM agents WHERE agents.id = transcripts.agent_id) "
            "AND NOT EXISTS (SELECT 1 FROM json_each(transcripts.entries) e "
            "WHERE json_extract(e.value, '$.endpoint') = ?))", (DIAGNOSIS_ENDPOINT,))
        return int(cursor.rowcount)
