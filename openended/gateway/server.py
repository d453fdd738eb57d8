"""The model gateway: an OpenAI-compatible HTTP endpoint on Unix domain sockets, one socket per
evaluation, forwarding to the campaign's models through :func:`openended.llm.complete`.

    with Gateway(specs, GatewayLimits(max_tokens_per_child=2000)) as gateway:
        lease = gateway.open(agent_id)           # binds a fresh socket for this evaluation
        sandbox.evaluate([files], args, gateway=lease.socket_path)
        usage = gateway.end(lease)               # GatewayUsage: tokens, cost, calls, limit hit, transcript

Why aiohttp on an event loop of its own (a daemon thread of the process that owns the gateway):
one loop serves every evaluation's socket, so a flood of connections from one child costs
file descriptors and a little memory, not threads (and at most ``max_connections_per_child`` of
them); a socket is added and removed while it runs (a Unix server of the loop feeding aiohttp's
request handler); requests are refused (flood, limits, bad bodies) before their body is read or
any thread is taken. The blocking model call runs in a bounded thread pool, under the client's own
retries and time limits. aiohttp is already installed (``ray[default]`` depends on it).

Attribution is by socket: each evaluation gets its own listening socket, named by a 128-bit random
token in a folder only this user can enter (mode 0700); a request is charged to the evaluation
whose socket accepted it (the accepted connection's ``sockname``). A sandbox reaches the socket
through a hard link in a folder mounted into its container (see ``openended.sandbox``), so no
container sees the gateway's folder or another evaluation's socket. The gateway's process holds the
keys; they travel only in the upstream request's Authorization header.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, and
``GET /v1/usage`` (this evaluation's calls, tokens and cost so far; not OpenAI's). Errors are
OpenAI-shaped JSON: 400 malformed body, 403 a per-child limit (``limit_reached``, ``code`` names
it), 404 unknown model or path, 410 the evaluation has ended, 413 body too large, 429 flood
(with Retry-After), 502 the model failed (its reason), 504 the model timed out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from openended.gateway.protocol import Call, Endpoint, Refusal, answer, error_body, parse_call, stream_events
from openended.gateway.records import GatewayLimits, GatewayUsage
from openended.gateway.usage import Child
from openended.llm.client import Completion, LLMError, complete
from openended.llm.spec import ModelSpec

log = logging.getLogger(__name__)
ENDED_KEPT = 10_000  # ended evaluations remembered, so that their open connections are told so (410)


@dataclass(frozen=True)
class Lease:
    """One evaluation's access to the gateway. ``socket_path`` is the host path of its socket: what a
    sandbox is given (``evaluate(..., gateway=lease.socket_path)``). Picklable (it crosses Ray)."""

    agent_id: int | str
    token: str
    socket_path: str


class Gateway:
    """The gateway for a campaign's ``models`` (the first is the default when a request names none).

    ``start()`` (or ``with``) runs its event loop in a daemon thread; ``close()`` ends every
    evaluation's socket and the loop. ``open``, ``usage`` and ``end`` may be called from any thread.
    ``end_grace_s``: how long ``end`` waits for the evaluation's calls still in flight (its agent is
    gone, the model may still answer); calls still running after that are charged what they reserved.
    """

    def __init__(self, models: Sequence[ModelSpec], limits: GatewayLimits | None = None, *,
                 socket_dir: str | os.PathLike[str] | None = None, workers: int = 32,
                 end_grace_s: float = 2.0) -> None:
        if not models:
            raise ValueError("the gateway needs at least one model")
        self.models = {spec.name: spec for spec in models}
        if len(self.models) != len(models):
            raise ValueError("model names must be unique")
        self.default_model = models[0].name
        self.limits = limits or GatewayLimits()
        self.end_grace_s = end_grace_s
        self._socket_dir_given = socket_dir is not None
        self.socket_dir = Path(socket_dir) if socket_dir is not None else None
        self._workers = workers
        self._children: dict[str, Child] = {}  # socket path -> its open evaluation (the loop's thread only)
        self._ended: dict[str, None] = {}  # socket paths of the latest ended evaluations (-> 410, not 403)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._numbers = 0

    # ------------------------------------------------------------------ life
    def start(self) -> Gateway:
        if self._loop is not None:
            return self
        if self.socket_dir is None:
            self.socket_dir = Path(tempfile.mkdtemp(prefix="openended-gateway-"))
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o700)
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="openended-gateway")
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="openended-gateway", daemon=True)
        self._thread.start()
        self._call(self._setup())
        return self

    async def _setup(self) -> None:
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_post("/v1/chat/completions", partial(self._handle, endpoint="chat"))
        app.router.add_post("/v1/completions", partial(self._handle, endpoint="completion"))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/usage", self._usage_of_caller)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()

    def close(self) -> None:
        """End every open evaluation (their usage is dropped) and stop the loop. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            loop.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self.socket_dir is not None and not self._socket_dir_given:
                shutil.rmtree(self.socket_dir, ignore_errors=True)
                self.socket_dir = None

    async def _shutdown(self) -> None:
        for child in list(self._children.values()):
            await self._stop_child(child)
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Any, timeout: float | None = 30.0) -> Any:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the gateway is not started")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # ------------------------------------------------------------------ evaluations
    def open(self, agent_id: int | str) -> Lease:
        """A fresh socket for one evaluation of ``agent_id``; every request on it is charged to that agent."""
        return self._call(self._open(agent_id))

    async def _open(self, agent_id: int | str) -> Lease:
        assert self._runner is not None and self.socket_dir is not None
        token = secrets.token_hex(16)
        path = str(self.socket_dir / f"{token}.sock")
        assert self._loop is not None
        server = await self._loop.create_unix_server(partial(self._connection, path), path)
        os.chmod(path, 0o666)  # the sandbox's user (65534) connects through a hard link to this inode
        self._children[path] = Child(agent_id=agent_id, token=token, path=path, site=server,
                                     limits=self.limits, secrets=self._secrets)
        return Lease(agent_id=agent_id, token=token, socket_path=path)

    def _connection(self, path: str) -> asyncio.BaseProtocol:
        """The protocol of a new connection on ``path``: aiohttp's, or, past the child's connection limit, one
        that answers 429 and closes (a child must not hold the driver's file descriptors by the thousand)."""
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        live = sum(1 for handler in server.connections
                   if handler.transport is not None and handler.transport.get_extra_info("sockname") == path)
        if live >= self.limits.max_connections_per_child:
            child = self._children.get(path)
            if child is not None:
                child.rejected += 1
            return _TooMany(self.limits.max_connections_per_child)
        return server()

    def usage(self, lease: Lease) -> GatewayUsage:
        """The evaluation's usage so far (its socket stays open)."""
        return self._call(self._usage(lease))

    async def _usage(self, lease: Lease) -> GatewayUsage:
        return self._child(lease).record()

    def end(self, lease: Lease) -> GatewayUsage:
        """Close the evaluation's socket, refuse its later requests (410) and return its usage."""
        return self._call(self._end(lease), timeout=self.end_grace_s + 30)

    async def _end(self, lease: Lease) -> GatewayUsage:
        child = self._child(lease)
        await self._stop_child(child)
        del self._children[child.path]
        self._ended[child.path] = None
        while len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]
        deadline = time.monotonic() + self.end_grace_s
        while child.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return child.record(charge_in_flight=True)

    def _child(self, lease: Lease) -> Child:
        child = self._children.get(lease.socket_path)
        if child is None or child.token != lease.token:
            raise KeyError(f"no open evaluation for agent {lease.agent_id!r} on this gateway")
        return child

    async def _stop_child(self, child: Child) -> None:
        if child.ended:
            return
        child.ended = True
        try:
            child.site.close()
        finally:
            Path(child.path).unlink(missing_ok=True)

    def _secrets(self) -> list[str]:
        """The models' keys as the environment holds them now, to scrub from transcripts."""
        return [key for spec in self.models.values() if spec.api_key_env
                for key in [os.environ.get(spec.api_key_env)] if key]

    # ------------------------------------------------------------------ HTTP
    async def _models(self, request: web.Request) -> web.Response:
        if self._owner(request) is None:
            return self._unowned(request)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "openended-gateway"}
                for name in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _usage_of_caller(self, request: web.Request) -> web.Response:
        """What this evaluation has spent so far, as the gateway counted it: an evaluator asks before and after
        each of its agent's runs to measure them (the agent may ask too; it can change nothing)."""
        child = self._owner(request)
        if child is None:
            return self._unowned(request)
        record = child.record()
        return web.json_response({"calls": record.calls, "rejected": record.rejected, "tokens_in": record.tokens_in,
                                  "tokens_out": record.tokens_out, "cost": record.cost,
                                  "limit_hit": record.limit_hit})

    def _owner(self, request: web.Request) -> Child | None:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return self._children.get(sockname) if isinstance(sockname, str) else None

    def _unowned(self, request: web.Request) -> web.Response:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if sockname in self._ended:  # a connection still open after its evaluation ended
            return _refuse(Refusal(410, "this evaluation has ended: the gateway takes no more of its requests",
                                   "evaluation_ended"))
        return _refuse(Refusal(403, "unknown or expired evaluation", "permission_error"))

    async def _handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        child = self._owner(request)
        if child is None:
            return self._unowned(request)
        began = time.monotonic()
        raw = b""
        call: Call | None = None
        try:
            if child.ended:
                raise Refusal(410, "this evaluation has ended: the gateway takes no more of its requests",
                              "evaluation_ended")
            child.admit(began)  # flood and concurrency limits, before the body is read
            try:
                try:
                    raw = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    raise Refusal(413, f"the request body is over {self.limits.max_body_bytes} bytes") from None
                call = parse_call(raw, endpoint)
                name = call.model or self.default_model
                spec = self.models.get(name)
                if spec is None:
                    raise Refusal(404, f"unknown model {name!r}; this gateway serves {', '.join(self.models)}",
                                  code="model_not_found")
                spec, reserved = child.reserve(spec, call)
            except BaseException:
                child.in_flight -= 1
                raise
        except Refusal as refusal:
            child.refused(began, endpoint, call.model if call else None, raw, refusal)
            return _refuse(refusal)
        try:
            return await self._forward(child, call, spec, reserved, raw, began)
        finally:
            child.in_flight -= 1

    async def _forward(self, child: Child, call: Call, spec: ModelSpec, reserved: tuple[int, float], raw: bytes,
                       began: float) -> web.StreamResponse:
        assert self._loop is not None and self._pool is not None
        forward = partial(complete, spec, call.prompt, system=call.system, seed=call.seed, stop=call.stop)
        try:
            done: Completion | LLMError = await self._loop.run_in_executor(self._pool, forward)
        except LLMError as exc:
            done = exc
        except Exception as exc:  # noqa: BLE001 - the client's own bug must not end the gateway
            done = LLMError(f"gateway: {type(exc).__name__}: {str(exc)[:200]}")
        self._numbers += 1
        if isinstance(done, LLMError):
            timed_out = done.reason.startswith("timed out")
            status = 504 if timed_out else 502
            message = f"model {spec.name!r} failed: {done.reason}"
            child.called(began, call, spec.name, raw, status, message, done.tokens_in, done.tokens_out, done.cost,
                         reserved)
            return web.json_response(error_body(message, "upstream_error", "timeout" if timed_out else None),
                                     status=status)
        child.called(began, call, spec.name, raw, 200, done.text, done.tokens_in, done.tokens_out, done.cost,
                     reserved)
        if call.stream:
            body = stream_events(call, self._numbers, spec.name, done.text, done.tokens_in, done.tokens_out)
            return web.Response(body=body, status=200, content_type="text/event-stream",
                                headers={"Cache-Control": "no-cache"})
        return web.json_response(answer(call, self._numbers, spec.name, done.text, done.tokens_in, done.tokens_out))


class _TooMany(asyncio.Protocol):
    """A connection past its child's limit: one HTTP 429 and the connection closes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = json.dumps(error_body(f"too many connections at once: at most {self.limit}", "rate_limit_error",
                                     "connections")).encode()
        head = (f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\nConnection: close\r\n\r\n").encode()
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(head + body)
        transport.close()


def _refuse(refusal: Refusal) -> web.Response:
    headers = {}
    if refusal.retry_after is not None:
        headers["Retry-After"] = f"{max(1, round(refusal.retry_after + 0.5))}"
    return web.json_response(refusal.body(), status=refusal.status, headers=headers)


__all__ = ["Gateway", "Lease"]
