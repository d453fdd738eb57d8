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

import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from openended.llm.attempt import Attempt, Failure, run_attempt
from openended.llm.spec import ModelSpec

log = logging.getLogger(__name__)

# Sent when a spec names no key variable: local servers ignore it, the openai package wants one.
_NO_KEY = "sk-no-key-required"


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

    def account(state: Attempt) -> None:
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
        state = Attempt()
        worker = threading.Thread(
            target=run_attempt, args=(spec, key, prompt, system, seed, stop, limit, state),
            name=f"llm-{spec.name}", daemon=True)
        worker.start()
        worker.join(limit)
        if not state.done:
            # The worker may still be blocked in a read; it ends by itself when its HTTP
            # timeout (<= limit) fires or at the next chunk. We do not wait for it.
            state.abandoned = True
            account(state)
            clipped = "" if limit >= spec.timeout_s else f", the rest of max_total_s={spec.max_total_s:g}s"
            raise Failure(f"timed out: no complete response within {limit:.3g}s "
                           f"(attempt {number} of {spec.max_retries + 1}{clipped})", retryable=True)
        account(state)
        if state.failure is not None:
            if key != _NO_KEY:  # a server that echoes the request must not leak the key into logs
                state.failure.detail = state.failure.detail.replace(key, "***")
            raise state.failure
        text = "".join(state.pieces)
        if not text.strip():
            raise Failure("empty completion", retryable=False)
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
        retry=retry_if_exception(lambda e: isinstance(e, Failure) and e.retryable),
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
    except Failure as exc:  # not retryable
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
