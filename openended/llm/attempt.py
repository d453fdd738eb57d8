"""One attempt at a streamed completion, in a worker thread the caller can walk away from.

:func:`run_attempt` fills an :class:`Attempt` as the stream comes in and reduces every failure to a
:class:`Failure` of plain data (retryable or not, Retry-After), so that nothing the caller keeps refers
to a request or its headers, and so never to a key. :func:`openended.llm.client.complete` runs attempts,
enforces their deadlines and retries them.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import openai

if TYPE_CHECKING:
    from openended.llm.spec import ModelSpec

# How much of a server's error message goes into a reason.
MESSAGE_CHARS = 300


class Failure(Exception):
    """One failed attempt, already reduced to plain data (no reference to requests or headers)."""

    def __init__(self, detail: str, *, retryable: bool, retry_after: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited


@dataclass
class Attempt:
    """What one attempt's worker thread has received so far (read by the caller at its deadline)."""

    started: bool = False            # the server answered 200 and began streaming
    pieces: list[str] = field(default_factory=list)
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None  # the last one the stream named
    failure: Failure | None = None
    done: bool = False
    abandoned: bool = False          # the caller gave up: stop reading at the next chunk


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After (seconds or HTTP date) or retry-after-ms header, if any."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message, short, from the JSON body or the raw text."""
    body = exc.body
    message = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message is None:
            message = body.get("detail") or body.get("message")
    if message is None:
        try:
            message = exc.response.text
        except Exception:  # a streamed body that was never read
            message = ""
    message = " ".join(str(message).split())
    return message[:MESSAGE_CHARS]


_STATUS_WORDS = {
    400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found",
    408: "request timeout", 409: "conflict", 413: "request too large", 422: "unprocessable",
    429: "rate limited", 500: "server error", 502: "bad gateway", 503: "unavailable",
    504: "gateway timeout",
}


def _status_failure(exc: openai.APIStatusError) -> Failure:
    status = exc.status_code
    words = _STATUS_WORDS.get(status, "server error" if status >= 500 else "client error")
    detail = f"HTTP {status} {words}"
    message = _server_message(exc)
    retryable = status == 429 or status == 408 or status >= 500
    if message:
        detail += f" ({message})"
    retry_after = _retry_after(exc.response.headers) if status in (429, 503) else None
    return Failure(detail, retryable=retryable, retry_after=retry_after, rate_limited=status == 429)


def _connection_failure(exc: Exception, base_url: str) -> Failure:
    cause = exc.__cause__ or exc
    text = str(cause)
    if "refused" in text.lower():
        return Failure(f"connection refused to {base_url}", retryable=True)
    return Failure(f"connection failed to {base_url}: {type(cause).__name__}: {text[:200]}",
                    retryable=True)


_clients_lock = threading.Lock()
_clients: dict[tuple[str, str], openai.OpenAI] = {}


def _client(base_url: str, key: str) -> openai.OpenAI:
    """One client per endpoint and key for the life of the process, shared by every attempt: building
    one costs a TLS context (30-90 ms, more than a local model's answer); it is thread-safe."""
    with _clients_lock:
        client = _clients.get((base_url, key))
        if client is None:
            client = _clients[(base_url, key)] = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        return client


def run_attempt(spec: ModelSpec, key: str, prompt: str, system: str | None, seed: int | None,
                 stop: list[str] | None, timeout: float, state: Attempt) -> None:
    """Stream one completion into `state` (runs in a worker thread; never raises)."""
    try:
        # The HTTP client's timeouts are a second line of defence: a server that sends nothing at
        # all releases this thread when the attempt's time is up. The caller enforces the deadline.
        # (openai.Timeout is the timeout class of whichever HTTP client the openai package uses.)
        limits = openai.Timeout(timeout, connect=min(timeout, 10.0))
        client = _client(spec.base_url, key)
        common = dict(model=spec.model, stream=True, max_tokens=spec.max_tokens, timeout=limits,
                      temperature=spec.temperature,
                      stream_options={"include_usage": True})
        if seed is not None:
            common["seed"] = seed
        if stop:
            common["stop"] = stop
        # The raw event stream, read here: the SDK builds the request, maps HTTP errors to its exceptions and
        # owns the connection; decoding each event into its typed objects would cost more than a local
        # server's whole answer (about 0.3 ms an event).
        if spec.api == "chat":
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            response = client.chat.completions.with_streaming_response.create(messages=messages, **common)
        else:
            text = f"{system}\n\n{prompt}" if system else prompt
            response = client.completions.with_streaming_response.create(prompt=text, **common)
        with response as stream:
            state.started = True
            for event in events(stream.iter_lines()):
                if state.abandoned:
                    return
                if "error" in event:
                    error = event["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise openai.APIError(str(message)[:MESSAGE_CHARS], stream.http_request, body=None)
                usage = event.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    state.usage = (int(usage.get("prompt_tokens") or 0), int(usage["completion_tokens"]))
                for choice in event.get("choices") or ():
                    if choice.get("finish_reason"):
                        state.finish_reason = str(choice["finish_reason"])[:40]
                    piece = (choice.get("delta") or {}).get("content") if spec.api == "chat" else choice.get("text")
                    if piece:
                        state.pieces.append(str(piece))
    except openai.APIStatusError as exc:
        state.failure = _status_failure(exc)
    except openai.APITimeoutError:
        state.failure = Failure(f"timed out: no complete response within {timeout:.3g}s",
                                 retryable=True)
    except openai.APIConnectionError as exc:
        state.failure = _connection_failure(exc, spec.base_url)
    except openai.APIError as exc:  # an error event inside the stream
        state.failure = Failure(f"server error mid-stream ({str(exc.message)[:MESSAGE_CHARS]})",
                                 retryable=True)
    except Exception as exc:  # a malformed response: not retried, reported as what it was
        state.failure = Failure(f"unexpected response: {type(exc).__name__}: {str(exc)[:200]}",
                                 retryable=False)
    finally:
        state.done = True


def events(lines: Iterator[str]) -> Iterator[dict]:
    """The JSON objects of a server-sent event stream, up to ``[DONE]``; an ``error`` event's data as
    ``{"error": data}``. A data line that is not a JSON object raises ValueError."""
    name = ""
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if not isinstance(event, dict):
                raise ValueError(f"an event that is not a JSON object: {data[:80]!r}")
            yield {"error": event.get("error", event)} if name == "error" else event
        elif not line:
            name = ""


