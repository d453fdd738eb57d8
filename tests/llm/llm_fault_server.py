"""A real OpenAI-compatible HTTP server on loopback that misbehaves on purpose, for fault tests.

It answers POST /v1/chat/completions and /v1/completions (streaming SSE or one JSON body, as the
request asks) and GET /v1/models. Each request consumes the next behaviour of its script; when the
script is empty, `default` answers. Every request is recorded in `.requests` (path, headers
lower-cased, including authorization; JSON body) so tests can check what reached the server.

    from llm_fault_server import FaultServer, ok, rate_limit, error, hang, empty, trickle, malformed

    with FaultServer([rate_limit(retry_after=1), ok("hello")]) as server:
        spec = ModelSpec(name="fake", base_url=server.base_url, model="fake-model")
        ...

Behaviours: `ok(text, usage=None)`, `rate_limit(retry_after=1, status=429)`,
`error(status=500, message=...)`, `hang(seconds)`, `empty()`, `trickle(text, delay_per_token)`,
`broken_stream(kind)` (a stream that breaks off with an error event or a line that is not JSON),
`malformed(kind)` (broken SEARCH/REPLACE blocks), `too_long(text)` (honours the request's max_tokens as a
real server does: cut there with finish reason "length"), `cut_off(text)` (finish reason "length" whatever
the limit), `unfinished(text)` (a stream that names no finish reason), `respond(fn)` where `fn(request) -> behaviour`
decides per request (e.g. by prompt content, for campaign-level tests).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------------------------------------
# Behaviours


@dataclass(frozen=True)
class Behaviour:
    """How to answer one request. Build them with the functions below."""

    kind: str
    text: str = ""
    status: int = 200
    retry_after: float | None = None
    seconds: float = 0.0
    delay_per_token: float = 0.0
    usage: tuple[int, int] | None = None
    message: str = ""
    hook: Callable | None = None
    finish: str | None = "stop"  # the finish reason of the last chunk (None: the stream names none)
    honour_max_tokens: bool = False  # cut the answer at the request's max_tokens pieces, finish "length"


def ok(text: str = "ok", usage: tuple[int, int] | None = None) -> Behaviour:
    """200 with `text`. `usage=(prompt_tokens, completion_tokens)` is sent (in a stream, only
    when the request asked for it with stream_options.include_usage, as OpenAI does)."""
    return Behaviour("ok", text=text, usage=usage)


def rate_limit(retry_after: float | None = 1, status: int = 429) -> Behaviour:
    """429 (or e.g. 503) with a Retry-After header in seconds (omitted when None)."""
    return Behaviour("status", status=status, retry_after=retry_after,
                     message="Rate limit reached for requests")


def error(status: int = 500, message: str = "internal server error") -> Behaviour:
    """An HTTP error with an OpenAI-style JSON body {"error": {"message": ...}}."""
    return Behaviour("status", status=status, message=message)


def hang(seconds: float = 30.0) -> Behaviour:
    """Accept the request, send nothing for `seconds` (or until the server closes), then drop the
    connection without an answer."""
    return Behaviour("hang", seconds=seconds)


def empty() -> Behaviour:
    """200 with empty content."""
    return Behaviour("ok", text="")


def trickle(text: str = "slow " * 50, delay_per_token: float = 0.2) -> Behaviour:
    """Stream `text` one token (word) at a time, `delay_per_token` seconds apart: bytes keep
    arriving, so only a wall-clock deadline cuts it."""
    return Behaviour("ok", text=text, delay_per_token=delay_per_token)


# Broken SEARCH/REPLACE answers, by kind, for the mutation operators' tests.
MALFORMED = {
    "no_divider": (
        "Here is the fix:\n<<<<<<< SEARCH\ndef f(x):\n    return x\n"
        "    return x + 1\n>>>>>>> REPLACE\n"),
    "unknown_search": (
        "<<<<<<< SEARCH\nthis line exists in no file of the agent\n=======\n"
        "replacement = True\n>>>>>>> REPLACE\n"),
    "unterminated": (
        "<<<<<<< SEARCH\ndef f(x):\n=======\ndef f(x, y):\n"),
    "no_blocks": "I would improve the agent by making it faster and better.",
    "reversed_markers": (
        ">>>>>>> REPLACE\nnew\n=======\nold\n<<<<<<< SEARCH\n"),
}


def malformed(kind: str = "no_divider") -> Behaviour:
    """200 whose text holds broken SEARCH/REPLACE blocks: one of MALFORMED's kinds."""
    if kind not in MALFORMED:
        raise ValueError(f"unknown malformed kind {kind!r}; choose from {sorted(MALFORMED)}")
    return Behaviour("ok", text=MALFORMED[kind])


def broken_stream(kind: str = "error_event", text: str = "partial answer") -> Behaviour:
    """Start streaming `text`, then break the stream: `error_event` sends an SSE ``event: error`` with an
    OpenAI-style error object (as servers report an overload mid-stream), `not_json` a data line that is
    not JSON, `error_data` a plain data line ``{"error": {...}}`` (as OpenAI's own stream does)."""
    if kind not in ("error_event", "not_json", "error_data"):
        raise ValueError(f"unknown broken stream {kind!r}")
    return Behaviour("broken", text=text, message=kind)


def too_long(text: str) -> Behaviour:
    """Answer `text` as a real server would under the request's max_tokens: at most that many pieces
    (words), and finish reason "length" when the text did not fit."""
    return Behaviour("ok", text=text, honour_max_tokens=True)


def cut_off(text: str) -> Behaviour:
    """Answer `text` and end it with finish reason "length" (the limit cut it), whatever the request asked."""
    return Behaviour("ok", text=text, finish="length")


def unfinished(text: str) -> Behaviour:
    """Answer `text` in a stream whose chunks never name a finish reason (some servers send none)."""
    return Behaviour("ok", text=text, finish=None)


def respond(fn: Callable[[Request], Behaviour]) -> Behaviour:
    """Decide per request: `fn(request)` returns the behaviour to use."""
    return Behaviour("hook", hook=fn)


# ---------------------------------------------------------------------------------------------
# The server


@dataclass
class Request:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    time: float = field(default_factory=time.monotonic)

    @property
    def prompt(self) -> str:
        """The prompt text (completions) or all message contents joined (chat)."""
        body = self.body or {}
        if "messages" in body:
            return "\n".join(str(m.get("content", "")) for m in body["messages"])
        return str(body.get("prompt", ""))


def _tokens(text: str) -> list[str]:
    """Split into word-sized pieces whose concatenation is `text`."""
    return re.findall(r"\S+\s*|\s+", text)


class FaultServer:
    """The scripted server: a ThreadingHTTPServer on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, script: list[Behaviour] | None = None, *, default: Behaviour | None = None,
                 model: str = "fault-model") -> None:
        self.script = list(script or [])
        self.default = default if default is not None else ok("default answer")
        self.model = model
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, *behaviours: Behaviour) -> None:
        """Append behaviours to the script."""
        with self._lock:
            self.script.extend(behaviours)

    def next_behaviour(self, request: Request) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            behaviour = self.script.pop(0) if self.script else self.default
        while behaviour.kind == "hook":
            behaviour = behaviour.hook(request)
        return behaviour

    def start(self) -> FaultServer:
        server = self

        class Handler(_Handler):
            fault_server = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="fault-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # releases handlers that hang or trickle
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    fault_server: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [
                {"id": self.fault_server.model, "object": "model", "owned_by": "fault-server"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        request = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        behaviour = self.fault_server.next_behaviour(request)
        if not self.path.endswith(("/chat/completions", "/completions")):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            if behaviour.kind == "status":
                headers = {}
                if behaviour.retry_after is not None:
                    headers["Retry-After"] = f"{behaviour.retry_after:g}"
                self._json(behaviour.status, {"error": {"message": behaviour.message,
                                                        "type": "fault_server"}}, headers)
            elif behaviour.kind == "hang":
                self.fault_server._closing.wait(behaviour.seconds)
                self.close_connection = True
            elif (body or {}).get("stream"):
                self._stream(request, behaviour)
            else:
                self._whole(request, behaviour)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: that is what many of these tests are about

    # -- answers ----------------------------------------------------------------------------

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _is_chat(self) -> bool:
        return self.path.endswith("/chat/completions")

    def _usage(self, behaviour: Behaviour) -> dict | None:
        if behaviour.usage is None:
            return None
        prompt, completion = behaviour.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def _whole(self, request: Request, behaviour: Behaviour) -> None:
        if self._is_chat():
            choice = {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": behaviour.text}}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "finish_reason": "stop", "text": behaviour.text, "logprobs": None}
            kind = "text_completion"
        payload = {"id": "fault-1", "object": kind, "created": int(time.time()),
                   "model": self.fault_server.model, "choices": [choice]}
        if behaviour.usage is not None:
            payload["usage"] = self._usage(behaviour)
        self._json(200, payload)

    def _stream(self, request: Request, behaviour: Behaviour) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chat = self._is_chat()
        base = {"id": "fault-1", "created": int(time.time()), "model": self.fault_server.model,
                "object": "chat.completion.chunk" if chat else "text_completion"}

        def send(choices: list, usage: dict | None = None) -> None:
            event = dict(base, choices=choices)
            if usage is not None:
                event["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()

        def piece(text: str, finish: str | None = None) -> dict:
            if chat:
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        if chat:
            send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        tokens = _tokens(behaviour.text)
        finish = behaviour.finish
        limit = (request.body or {}).get("max_tokens")
        if behaviour.honour_max_tokens and isinstance(limit, int) and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        for token in tokens:
            if behaviour.delay_per_token and self.fault_server._closing.wait(behaviour.delay_per_token):
                return
            send([piece(token)])
        if behaviour.kind == "broken":
            failure = {"error": {"message": "the model is overloaded", "type": "server_error"}}
            line = {"error_event": b"event: error\ndata: " + json.dumps(failure).encode(),
                    "not_json": b"data: {this is not json",
                    "error_data": b"data: " + json.dumps(failure).encode()}[behaviour.message]
            self.wfile.write(line + b"\n\n")
            self.wfile.flush()
            return
        if finish is not None:
            send([piece("", finish)])
        include_usage = ((request.body or {}).get("stream_options") or {}).get("include_usage")
        if include_usage and behaviour.usage is not None:
            send([], self._usage(behaviour))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
