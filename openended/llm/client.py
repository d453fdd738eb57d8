"""One client for every OpenAI-compatible endpoint: hosted APIs, vLLM, Ollama, llama.cpp servers
and the embedded local model (see `openended.llm.local`).

`complete(spec, prompt)` streams one completion and returns a `Completion`, or raises `LLMError`
whose `.reason` says precisely what went wrong. Guarantees:

- one attempt never runs longer than `spec.timeout_s` (request start to last byte), and all
  attempts plus the waits between them never run longer than `spec.max_total_s`; the caller is
  released at the deadline even if the server keeps trickling bytes or never answers;
- 429 (honouring Retry-After), 5xx, connection errors and timeouts are retried with exponential
  backoff and jitter, at most `spec.max_retries` times; other 4xx fail at once;
- the API key is read from the environment variable *named* in the spec at call time; it is sent
  to the server only, and never appears in a reason, repr, log line or exception chain.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import openai
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)

# Sent when a spec names no key variable: local servers ignore it, the openai package wants one.
_NO_KEY = "sk-no-key-required"
# How much of a server's error message goes into a reason.
_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ModelSpec:
    """One model endpoint of a campaign, and the limits every call to it obeys.

    `api_key_env` is the NAME of the environment variable holding the key (None: the server needs
    none). `api="completion"` uses /v1/completions (best for base models such as the embedded
    Gemma); `"chat"` uses /v1/chat/completions. Prices are per token. `timeout_s` bounds one
    attempt from request start to the last byte; `max_total_s` bounds all attempts and the waits
    between them.
    """

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    api: Literal["completion", "chat"] = "chat"
    temperature: float = 0.8
    max_tokens: int = 512
    price_in: float = 0.0
    price_out: float = 0.0
    timeout_s: float = 60.0
    max_retries: int = 3
    max_total_s: float = 180.0

    def __post_init__(self) -> None:
        problems = []
        for attr in ("name", "base_url", "model"):
            if not isinstance(getattr(self, attr), str) or not getattr(self, attr).strip():
                problems.append(f"{attr} must be a non-empty string")
        if not str(self.base_url).startswith(("http://", "https://")):
            problems.append(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        if self.api not in ("completion", "chat"):
            problems.append(f"api must be 'completion' or 'chat' (got {self.api!r})")
        if self.api_key_env is not None and (
            not isinstance(self.api_key_env, str) or not self.api_key_env.strip()
        ):
            problems.append("api_key_env must be the name of an environment variable, or None")
        for attr in ("timeout_s", "max_total_s"):
            value = getattr(self, attr)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                problems.append(f"{attr} must be a positive number of seconds (got {value!r})")
        for attr in ("price_in", "price_out", "temperature"):
            value = getattr(self, attr)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{attr} must be a finite number >= 0 (got {value!r})")
        if not (isinstance(self.max_tokens, int) and self.max_tokens > 0):
            problems.append(f"max_tokens must be a positive integer (got {self.max_tokens!r})")
        if not (isinstance(self.max_retries, int) and self.max_retries >= 0):
            problems.append(f"max_retries must be an integer >= 0 (got {self.max_retries!r})")
        if problems:
            raise ValueError(f"model {self.name!r}: " + "; ".join(problems))


@dataclass
class Completion:
    """A finished completion. Tokens and cost are summed over all attempts (what was billed);
    `estimated` is True when the server sent no usage and the counts are estimates."""

    text: str
    tokens_in: int
    tokens_out: int
    cost: float
    model: str
    seconds: float
    attempts: int
    estimated: bool = False
    # Why the server ended the answer: "stop" (end of text or a stop string), "length" (max_tokens
    # reached), another server's word, or None when the stream named none.
    finish_reason: str | None = None
    max_tokens: int | None = None  # the limit the call asked for
    # Whether max_tokens cut the answer off: the server said so (finish reason ``length``), or it named no
    # reason and the answer (of the attempt that succeeded) used the whole limit.
    truncated: bool = False


class LLMError(Exception):
    """A call that failed for good. `.reason` is short and precise; `.tokens_in`, `.tokens_out`
    and `.cost` are what was spent before failing (0 when unknown); `.attempts` how many were
    made. Picklable (it crosses Ray process boundaries) and carries no exception chain."""

    def __init__(
        self,
        reason: str,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
        attempts: int = 0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.cost = cost
        self.attempts = attempts

    def __reduce__(self):
        kwargs = dict(
            tokens_in=self.tokens_in, tokens_out=self.tokens_out, cost=self.cost, attempts=self.attempts
        )
        return (_rebuild_error, (self.reason, kwargs))


def _rebuild_error(reason: str, kwargs: dict) -> LLMError:
    return LLMError(reason, **kwargs)


# ---------------------------------------------------------------------------------------------
# One attempt


class _Failure(Exception):
    """One failed attempt, already reduced to plain data (no reference to requests or headers)."""

    def __init__(self, detail: str, *, retryable: bool, retry_after: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited


@dataclass
class _Attempt:
    """What one attempt's worker thread has received so far (read by the caller at its deadline)."""

    started: bool = False            # the server answered 200 and began streaming
    pieces: list[str] = field(default_factory=list)
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None  # the last one the stream named
    failure: _Failure | None = None
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
    return message[:_MESSAGE_CHARS]


_STATUS_WORDS = {
    400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found",
    408: "request timeout", 409: "conflict", 413: "request too large", 422: "unprocessable",
    429: "rate limited", 500: "server error", 502: "bad gateway", 503: "unavailable",
    504: "gateway timeout",
}


def _status_failure(exc: openai.APIStatusError) -> _Failure:
    status = exc.status_code
    words = _STATUS_WORDS.get(status, "server error" if status >= 500 else "client error")
    detail = f"HTTP {status} {words}"
    message = _server_message(exc)
    retryable = status == 429 or status == 408 or status >= 500
    if message:
        detail += f" ({message})"
    retry_after = _retry_after(exc.response.headers) if status in (429, 503) else None
    return _Failure(detail, retryable=retryable, retry_after=retry_after, rate_limited=status == 429)


def _connection_failure(exc: Exception, base_url: str) -> _Failure:
    cause = exc.__cause__ or exc
    text = str(cause)
    if "refused" in text.lower():
        return _Failure(f"connection refused to {base_url}", retryable=True)
    return _Failure(f"connection failed to {base_url}: {type(cause).__name__}: {text[:200]}",
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


def _run_attempt(spec: ModelSpec, key: str, prompt: str, system: str | None, seed: int | None,
                 stop: list[str] | None, timeout: float, state: _Attempt) -> None:
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
            for event in _events(stream.iter_lines()):
                if state.abandoned:
                    return
                if "error" in event:
                    error = event["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise openai.APIError(str(message)[:_MESSAGE_CHARS], stream.http_request, body=None)
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
        state.failure = _Failure(f"timed out: no complete response within {timeout:.3g}s",
                                 retryable=True)
    except openai.APIConnectionError as exc:
        state.failure = _connection_failure(exc, spec.base_url)
    except openai.APIError as exc:  # an error event inside the stream
        state.failure = _Failure(f"server error mid-stream ({str(exc.message)[:_MESSAGE_CHARS]})",
                                 retryable=True)
    except Exception as exc:  # a malformed response: not retried, reported as what it was
        state.failure = _Failure(f"unexpected response: {type(exc).__name__}: {str(exc)[:200]}",
                                 retryable=False)
    finally:
        state.done = True


def _events(lines: Iterator[str]) -> Iterator[dict]:
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


# ---------------------------------------------------------------------------------------------
# The call


def _api_key(spec: ModelSpec) -> str:
    if spec.api_key_env is None:
        return _NO_KEY
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise LLMError(f"environment variable {spec.api_key_env} (the API key for model "
                       f"{spec.name!r}) is not set or empty")
    return key


def _estimate_tokens(text: str) -> int:
    """About four characters per token: the usual rule of thumb for English and code."""
    return max(1, math.ceil(len(text) / 4))


def complete(spec: ModelSpec, prompt: str, *, system: str | None = None, seed: int | None = None,
             stop: list[str] | None = None) -> Completion:
    """Ask `spec`'s model to continue `prompt` (chat: as the user message after `system`;
    completion: `system` and `prompt` joined by a blank line) and return the text.

    Streams the answer and gives up on an attempt at `spec.timeout_s` wall-clock seconds (or when
    `spec.max_total_s` runs out, whichever is first). Retries 429 (waiting Retry-After when the
    server sends one, else exponential backoff with jitter), 408, 5xx, connection errors and
    timeouts, up to `spec.max_retries` times; when a Retry-After would pass `max_total_s` it fails
    at once and says so. Other 4xx and malformed responses fail at once. An empty completion is
    not retried (with a fixed seed a retry would most likely say nothing again): LLMError("empty
    completion").

    Usage: taken from the server when it sends it (`stream_options.include_usage`; llama.cpp's
    server does not). Otherwise estimated, and `Completion.estimated` is True: output tokens = the
    number of streamed text chunks (servers stream about one token per chunk), input tokens =
    len(system + prompt) / 4. Tokens of attempts that failed after streaming began (timeouts) are
    counted too. cost = tokens_in * price_in + tokens_out * price_out.

    `Completion.finish_reason` is the stream's own (OpenAI, vLLM and llama.cpp send ``length`` when
    `spec.max_tokens` cut the answer); `Completion.truncated` says whether the answer was cut off.

    Raises LLMError (with the tokens and cost spent so far) on any failure.
    """
    if not isinstance(prompt, str) or not prompt:
        raise LLMError(f"the prompt for model {spec.name!r} must be a non-empty string")
    key = _api_key(spec)
    start = time.monotonic()
    budget_end = start + spec.max_total_s
    spent = {"in": 0, "out": 0, "estimated": False}
    input_estimate = _estimate_tokens((system or "") + prompt)
    finish: list[str | None] = [None]  # the successful attempt's finish reason
    cut = [False]  # whether max_tokens cut the successful attempt's answer off

    def account(state: _Attempt) -> None:
        if state.usage is not None:
            spent["in"] += state.usage[0]
            spent["out"] += state.usage[1]
        elif state.started:
            spent["in"] += input_estimate
            spent["out"] += len(state.pieces)
            spent["estimated"] = True

    def cost() -> float:
        return spent["in"] * spec.price_in + spent["out"] * spec.price_out

    def attempt(number: int) -> str:
        now = time.monotonic()
        limit = min(spec.timeout_s, budget_end - now)
        state = _Attempt()
        worker = threading.Thread(
            target=_run_attempt, args=(spec, key, prompt, system, seed, stop, limit, state),
            name=f"llm-{spec.name}", daemon=True)
        worker.start()
        worker.join(limit)
        if not state.done:
            # The worker may still be blocked in a read; it ends by itself when its HTTP
            # timeout (<= limit) fires or at the next chunk. We do not wait for it.
            state.abandoned = True
            account(state)
            clipped = "" if limit >= spec.timeout_s else f", the rest of max_total_s={spec.max_total_s:g}s"
            raise _Failure(f"timed out: no complete response within {limit:.3g}s "
                           f"(attempt {number} of {spec.max_retries + 1}{clipped})", retryable=True)
        account(state)
        if state.failure is not None:
            if key != _NO_KEY:  # a server that echoes the request must not leak the key into logs
                state.failure.detail = state.failure.detail.replace(key, "***")
            raise state.failure
        text = "".join(state.pieces)
        if not text.strip():
            raise _Failure("empty completion", retryable=False)
        finish[0] = state.finish_reason
        out = state.usage[1] if state.usage is not None else len(state.pieces)
        cut[0] = state.finish_reason == "length" if state.finish_reason is not None else out >= spec.max_tokens
        return text

    def log_retry(rs: RetryCallState) -> None:
        failure = rs.outcome.exception()
        log.warning("model %s: attempt %d failed (%s); retrying in %.1fs", spec.name,
                    rs.attempt_number, failure.detail, rs.upcoming_sleep)

    def give_up(rs: RetryCallState) -> None:
        failure = rs.outcome.exception()
        elapsed = time.monotonic() - start
        plural = "s" if rs.attempt_number != 1 else ""
        if rs.attempt_number > spec.max_retries:
            why = f"gave up after {rs.attempt_number} attempt{plural} in {elapsed:.1f}s"
        elif failure.retry_after is not None and failure.retry_after >= budget_end - time.monotonic():
            left = max(0.0, budget_end - time.monotonic())
            why = (f"Retry-After {failure.retry_after:g}s exceeds the {left:.1f}s left of "
                   f"max_total_s={spec.max_total_s:g}s (after {rs.attempt_number} attempt{plural})")
        else:
            why = (f"gave up after {rs.attempt_number} attempt{plural} in {elapsed:.1f}s "
                   f"(max_total_s={spec.max_total_s:g}s)")
        raise _GaveUp(f"{failure.detail}: {why}", rs.attempt_number)

    def wait(rs: RetryCallState) -> float:
        failure = rs.outcome.exception()
        if failure.retry_after is not None:
            return failure.retry_after
        return backoff(rs)

    backoff = wait_exponential_jitter(multiplier=0.5, max=20.0, jitter=0.5)
    retrying = Retrying(
        stop=stop_after_attempt(spec.max_retries + 1) | stop_before_delay(spec.max_total_s),
        wait=wait,
        retry=retry_if_exception(lambda e: isinstance(e, _Failure) and e.retryable),
        before_sleep=log_retry,
        retry_error_callback=give_up,
        sleep=time.sleep,
    )
    reason = None
    attempts = 0
    try:
        for managed in retrying:
            with managed:
                attempts = managed.retry_state.attempt_number
                text = attempt(attempts)
    except _GaveUp as exc:
        reason, attempts = exc.reason, exc.attempts
    except _Failure as exc:  # not retryable
        reason = exc.detail if attempts <= 1 else f"{exc.detail} (attempt {attempts})"
    if reason is not None:
        # Raised outside the except blocks so the error carries no exception chain.
        log.warning("model %s failed: %s", spec.name, reason)
        raise LLMError(reason, tokens_in=spent["in"],
                       tokens_out=spent["out"], cost=cost(), attempts=attempts)
    return Completion(text=text, tokens_in=spent["in"], tokens_out=spent["out"], cost=cost(),
                      model=spec.name, seconds=time.monotonic() - start, attempts=attempts,
                      estimated=spent["estimated"], finish_reason=finish[0], max_tokens=spec.max_tokens,
                      truncated=cut[0])


class _GaveUp(Exception):
    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
