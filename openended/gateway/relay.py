"""The gateway on every node: a sandbox on a worker node reaches its evaluation's gateway socket, which is
a file of the driver's machine, through Ray alone.

On the driver's node a :class:`GatewayDoor` actor (started by the campaign, no CPU) connects to the
gateway's sockets there. A job that runs on another node opens a :class:`Relay` for its evaluation: a
Unix socket of its own node, in the sandboxes' work folder, that the sandbox is given in place of the
driver's path. Each request on it is read whole (within the gateway's body limit), sent to the door as
bytes, and the gateway's answer comes back through a Ray streaming generator as it is written, so a
streamed completion streams on the worker too. Nothing else crosses: the keys and the models' addresses
stay with the driver's gateway, and no network port is opened beyond Ray's own.

:func:`local_socket` is what a worker calls: the driver's path where the job runs on the driver's node,
a relay's path anywhere else.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import shutil
import socket
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openended.gateway.protocol import error_body

log = logging.getLogger(__name__)

# Headers that describe one hop of a connection, not the request: the relay sets its own.
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host",
                         "proxy-connection", "te", "trailer", "upgrade"})
CHUNK_BYTES = 64 * 1024
# How long the door waits for the gateway's next bytes: the gateway's own model timeouts end a call first.
DOOR_READ_TIMEOUT_S = 600.0
# How long the relay waits for a request's next bytes from the sandbox (a client that sends nothing goes).
RELAY_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class GatewayRoute:
    """How a job reaches its evaluation's gateway: ``socket_path`` on the driver's node (``node_id``), and
    from any other node through ``door`` (a :class:`GatewayDoor` actor handle). Without a door (no Ray, or
    one node's sandbox) the path is used as it is. The limits are the gateway's, applied on the node too."""

    socket_path: str
    node_id: str | None = None
    door: Any = None
    max_connections: int = 16
    max_body_bytes: int = 1_000_000


class GatewayDoor:
    """The driver node's side: forwards a relayed request to one of the gateway's sockets under
    ``socket_dir`` (and nowhere else) and yields the answer's bytes as they come."""

    def __init__(self, socket_dir: str):
        self.socket_dir = Path(socket_dir).resolve()

    def forward(self, socket_path: str, request: bytes) -> Iterator[bytes]:
        path = Path(socket_path).resolve()
        if path.parent != self.socket_dir or path.suffix != ".sock":
            raise ValueError(f"not a gateway socket of this campaign: {socket_path}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(DOOR_READ_TIMEOUT_S)
            conn.connect(str(path))
            conn.sendall(request)
            while chunk := conn.recv(CHUNK_BYTES):
                yield chunk

    def ping(self) -> bool:
        return True


def start_door(socket_dir: str | os.PathLike[str]) -> tuple[Any, str]:
    """A :class:`GatewayDoor` actor on this process's Ray node; returns its handle and the node's id."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    actor: Any = ray.remote(GatewayDoor)
    door = actor.options(
        num_cpus=0, max_concurrency=256, max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)).remote(str(socket_dir))
    ray.get(door.ping.remote(), timeout=120)
    return door, node_id


@contextlib.contextmanager
def local_socket(route: GatewayRoute | None) -> Iterator[str | None]:
    """The gateway socket path a sandbox on this node is given for ``route`` (None: no gateway)."""
    if route is None:
        yield None
        return
    if route.door is None or route.node_id == _this_node():
        yield route.socket_path
        return
    relay = Relay(route)
    try:
        yield relay.path
    finally:
        relay.close()


def _this_node() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class Relay:
    """One evaluation's gateway socket on a worker node, relayed to the driver's through the door. Serves
    from a thread until :meth:`close`; at most ``route.max_connections`` connections at once (more are
    answered 429), requests within ``route.max_body_bytes`` (larger ones 413)."""

    def __init__(self, route: GatewayRoute, folder: str | None = None):
        from openended.sandbox.engine import work_dir

        # In the sandboxes' work folder: the Docker sandbox hard-links the socket into a container's folder.
        self.folder = Path(tempfile.mkdtemp(prefix="openended-relay-", dir=folder or work_dir()))
        self.folder.chmod(0o755)
        self.path = str(self.folder / "model.sock")
        self.route = route
        self._server = _RelayServer(self.path, route)
        os.chmod(self.path, 0o666)  # the sandbox's user (65534) connects through a hard link to this inode
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="openended-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        shutil.rmtree(self.folder, ignore_errors=True)


class _RelayServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, route: GatewayRoute):
        self.route = route
        self._open = threading.BoundedSemaphore(route.max_connections)
        super().__init__(path, _RelayHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Checked before a thread is made: a sandbox opening connections by the thousand gets no threads.
        if not self._open.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(_answer(429, f"too many connections to the gateway (at most "
                                             f"{self.route.max_connections} per evaluation)", "rate_limit_error"))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.release()


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = RELAY_READ_TIMEOUT_S
    server: _RelayServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._relay()

    def do_POST(self) -> None:  # noqa: N802
        self._relay()

    def _relay(self) -> None:
        import ray

        self.close_connection = True  # one request per connection: the gateway's answer ends with it
        route = self.server.route
        if self.headers.get("Transfer-Encoding"):
            self.wfile.write(_answer(411, "send the request body with a Content-Length", "invalid_request_error"))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= route.max_body_bytes:
            self.wfile.write(_answer(413, f"request body over {route.max_body_bytes} bytes (or its length is "
                                          "malformed)", "invalid_request_error"))
            return
        body = self.rfile.read(length)
        headers = [f"{name}: {value}" for name, value in self.headers.items() if name.lower() not in HOP_HEADERS]
        head = [f"{self.command} {self.path} HTTP/1.1", "Host: gateway", *headers, "Connection: close",
                f"Content-Length: {len(body)}"]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        answer = route.door.forward.options(num_returns="streaming").remote(route.socket_path, request)
        written = False
        try:
            for ref in answer:
                self.wfile.write(ray.get(ref))
                self.wfile.flush()
                written = True
        except (BrokenPipeError, ConnectionResetError):  # the agent went away: stop the door's side too
            with contextlib.suppress(Exception):
                ray.cancel(answer)
        except Exception as exc:  # noqa: BLE001 - the driver's side failed: the agent is told, the node goes on
            log.warning("gateway relay: %s", exc)
            if not written:
                with contextlib.suppress(OSError):
                    self.wfile.write(_answer(502, "the gateway could not be reached from this node",
                                             "api_error"))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # each request is in the gateway's transcript on the driver


def _answer(status: int, message: str, kind: str) -> bytes:
    body = json.dumps(error_body(message, kind)).encode()
    reason = http.server.BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body
