"""Call a foundation model from inside the sandbox, through the campaign's model gateway.

Standard library only. The sandbox has no network; when its task asks for the gateway, the
evaluation (and every agent started with ``sandboxes.agent.run_agent``) finds the path of a Unix
domain socket in the environment variable ``OPENENDED_MODEL_SOCKET``, where an OpenAI-compatible
endpoint answers. It holds no key: the gateway adds it on the host, charges every call to this
child and enforces its limits.

    from sandboxes.model import ModelError, chat, complete

    text = chat([{"role": "user", "content": "Write a haiku about bins."}], max_tokens=64)
    text = complete("def fib(n):", max_tokens=64, stop=["\\n\\n"])
    names = models()                     # the model names the gateway serves (the first is the default)
    spent = usage()                      # this evaluation's calls, tokens and cost so far, as the gateway counts

``model=None`` uses the gateway's default model. Other keywords (``max_tokens``, ``temperature``,
``stop``, ``seed``) go into the request body. Every failure raises :class:`ModelError`, whose
``status`` is the HTTP status (0: no answer) and ``code`` the gateway's error code, e.g.
``"max_tokens_per_child"`` once this child's token limit is reached (status 403), ``"flood"``
(429), ``"model_not_found"`` (404); 502/504: the model failed or timed out.

A standard client can use the same socket, e.g. the ``openai`` package with httpx::

    import httpx, openai
    client = openai.OpenAI(base_url="http://gateway/v1", api_key="unused",
                           http_client=httpx.Client(transport=httpx.HTTPTransport(
                               uds=os.environ["OPENENDED_MODEL_SOCKET"])))

(``OPENAI_BASE_URL=http://gateway/v1`` with any dummy ``OPENAI_API_KEY``; the host name is ignored.)
"""

import http.client
import json
import os
import socket

__all__ = ["ENV", "ModelError", "chat", "complete", "models", "request", "usage"]

ENV = "OPENENDED_MODEL_SOCKET"
DEFAULT_TIMEOUT_S = 300.0


class ModelError(Exception):
    """A model call that failed: ``status`` (HTTP status, 0 when the gateway did not answer), ``code``
    (the gateway's error code or None) and the message."""

    def __init__(self, message, status=0, code=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("gateway", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _socket_path(path):
    path = path or os.environ.get(ENV)
    if not path:
        raise ModelError(f"no model gateway: {ENV} is not set (the task does not ask for the gateway)")
    return path


def request(method, path, body=None, *, socket_path=None, timeout=DEFAULT_TIMEOUT_S):
    """One HTTP request to the gateway; the decoded JSON answer, or ModelError."""
    conn = _UnixConnection(_socket_path(socket_path), timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        raise ModelError(f"the model gateway did not answer: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            raise ModelError(str(error.get("message")), status, error.get("code"))
        raise ModelError(f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}", status)
    if not isinstance(answer, dict):
        raise ModelError("the gateway's answer is not a JSON object", status)
    return answer


def _body(model, extra):
    body = {key: value for key, value in extra.items() if value is not None}
    if model is not None:
        body["model"] = model
    return body


def chat(messages, model=None, *, socket_path=None, timeout=DEFAULT_TIMEOUT_S, **params):
    """The assistant's reply to ``messages`` (a list of ``{"role", "content"}``) as text."""
    body = _body(model, params)
    body["messages"] = messages
    answer = request("POST", "/v1/chat/completions", body, socket_path=socket_path, timeout=timeout)
    try:
        return answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ModelError("the gateway's answer holds no message") from None


def complete(prompt, model=None, *, socket_path=None, timeout=DEFAULT_TIMEOUT_S, **params):
    """The model's continuation of ``prompt`` as text (``/v1/completions``)."""
    body = _body(model, params)
    body["prompt"] = prompt
    answer = request("POST", "/v1/completions", body, socket_path=socket_path, timeout=timeout)
    try:
        return answer["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise ModelError("the gateway's answer holds no text") from None


def models(*, socket_path=None, timeout=30.0):
    """The names of the models the gateway serves."""
    answer = request("GET", "/v1/models", socket_path=socket_path, timeout=timeout)
    return [entry.get("id") for entry in answer.get("data") or () if isinstance(entry, dict)]


def usage(*, socket_path=None, timeout=30.0):
    """What this evaluation has spent through the gateway so far, as the gateway counts it: a dict with
    ``calls``, ``rejected``, ``tokens_in``, ``tokens_out``, ``cost`` and ``limit_hit``."""
    answer = request("GET", "/v1/usage", socket_path=socket_path, timeout=timeout)
    return {key: answer.get(key) for key in ("calls", "rejected", "tokens_in", "tokens_out", "cost", "limit_hit")}
