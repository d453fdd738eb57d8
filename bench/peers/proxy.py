"""An OpenAI-compatible counting proxy on loopback, in front of the endpoint every system talks to.

It forwards each request to ``upstream`` (adding ``Authorization: Bearer $KEY`` read from the environment
variable named by ``api_key_env``, so that no peer's configuration, file or log ever holds the key),
counts the model calls (POSTs to ``.../completions``) and the tokens their answers report, and holds every
call after the first ``budget`` until it is closed: a system that would go on past its share of calls
waits there, and the bench stops it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CountingProxy:
    def __init__(self, upstream: str, *, api_key_env: str | None = None, budget: int | None = None,
                 timeout_s: float = 900.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.api_key_env = api_key_env
        self.budget = budget
        self.timeout_s = timeout_s
        self.calls = 0            # calls answered or in flight (held ones not included)
        self.answered = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.held = 0             # calls held past the budget
        self.last_answer_at: float | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> CountingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._forward(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admit(self) -> bool:
        with self._lock:
            if self.budget is not None and self.calls >= self.budget:
                self.held += 1
                return False
            self.calls += 1
            return True

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        path = handler.path
        suffix = path[len("/v1"):] if path.startswith("/v1") else path
        is_call = body is not None and suffix.rstrip("/").endswith("completions")
        if is_call and not self._admit():
            self._closed.wait()  # past the budget: held until the bench stops the system
            handler.close_connection = True
            return
        headers = {"Content-Type": handler.headers.get("Content-Type", "application/json")}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.upstream + suffix, data=body, headers=headers,
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, payload = response.status, response.read()
                content_type = response.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
            content_type = exc.headers.get("Content-Type", "application/json")
        except (urllib.error.URLError, OSError) as exc:
            status, content_type = 502, "application/json"
            payload = json.dumps({"error": {"message": f"proxy: upstream unreachable: {exc}"}}).encode()
        if is_call:
            self._count(payload)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass

    def _count(self, payload: bytes) -> None:
        usage: dict = {}
        try:
            text = payload.decode("utf-8", "replace")
            if text.lstrip().startswith("{"):
                usage = json.loads(text).get("usage") or {}
            else:  # a server-sent event stream: the last chunk that reports usage
                for line in text.splitlines():
                    if line.startswith("data:") and '"usage"' in line:
                        usage = json.loads(line[5:]).get("usage") or usage
        except (ValueError, AttributeError):
            usage = {}
        with self._lock:
            self.answered += 1
            self.tokens_in += int(usage.get("prompt_tokens") or 0)
            self.tokens_out += int(usage.get("completion_tokens") or 0)
            self.last_answer_at = time.monotonic()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"calls": self.calls, "answered": self.answered, "held": self.held,
                    "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}
