"""Fault tests for the model client against a real loopback HTTP server that misbehaves on purpose
(tests/llm/llm_fault_server.py): rate limits, server errors, hangs, trickles, empty answers, bad
requests, missing keys, key secrecy, usage and cost."""

from __future__ import annotations

import logging
import math
import pickle
import socket
import threading
import time

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_fault_server import (
    MALFORMED,
    FaultServer,
    broken_stream,
    cut_off,
    empty,
    error,
    hang,
    malformed,
    ok,
    rate_limit,
    respond,
    too_long,
    trickle,
    unfinished,
)

from openended.llm import Completion, LLMError, ModelSpec, complete

# Scheduling noise on a shared 2-core machine: how far past a limit a call may return.
SLACK = 0.6


def spec_for(server: FaultServer, **fields) -> ModelSpec:
    values = dict(name="fake-gpt", base_url=server.base_url, model="fake-model", timeout_s=2.0,
                  max_retries=2, max_total_s=10.0)
    values.update(fields)
    return ModelSpec(**values)


def timed(fn, *args, **kwargs):
    """(result or LLMError, seconds)."""
    began = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except LLMError as exc:
        result = exc
    return result, time.monotonic() - began


# -- rate limits ---------------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds():
    with FaultServer([rate_limit(retry_after=1), ok("second time lucky")]) as server:
        result, seconds = timed(complete, spec_for(server), "hello")
        assert isinstance(result, Completion), result
        assert result.text == "second time lucky"
        assert result.attempts == 2
        first, second = server.requests
        assert second.time - first.time >= 1.0, "the retry came before Retry-After elapsed"
        assert seconds >= 1.0


def test_429_forever_gives_up_after_max_retries_within_the_budget():
    with FaultServer(default=rate_limit(retry_after=0.2)) as server:
        spec = spec_for(server, max_retries=3, max_total_s=5.0)
        result, seconds = timed(complete, spec, "hello")
        assert isinstance(result, LLMError)
        assert result.reason.startswith("HTTP 429 rate limited")
        assert "gave up after 4 attempts" in result.reason
        assert result.attempts == 4 and len(server.requests) == 4
        assert 3 * 0.2 <= seconds <= spec.max_total_s


def test_retry_after_beyond_the_budget_fails_at_once_and_says_why():
    with FaultServer(default=rate_limit(retry_after=30)) as server:
        result, seconds = timed(complete, spec_for(server, max_total_s=5.0), "hello")
        assert isinstance(result, LLMError)
        assert "Retry-After 30s exceeds" in result.reason and "max_total_s=5s" in result.reason
        assert len(server.requests) == 1
        assert seconds < 1.0


def test_503_retry_after_is_honoured_too():
    with FaultServer([rate_limit(retry_after=0.5, status=503), ok("up again")]) as server:
        result, seconds = timed(complete, spec_for(server), "hello")
        assert isinstance(result, Completion) and result.text == "up again"
        assert server.requests[1].time - server.requests[0].time >= 0.5


# -- server errors -------------------------------------------------------------------------------


def test_500_is_retried_then_succeeds():
    with FaultServer([error(500), error(502), ok("fine")]) as server:
        result, _ = timed(complete, spec_for(server), "hello")
        assert isinstance(result, Completion) and result.text == "fine"
        assert result.attempts == 3


def test_500_forever_reports_status_and_message():
    with FaultServer(default=error(500, "database on fire")) as server:
        result, seconds = timed(complete, spec_for(server, max_retries=1), "hello")
        assert isinstance(result, LLMError)
        assert result.reason.startswith("HTTP 500 server error (database on fire)")
        assert "gave up after 2 attempts" in result.reason
        assert len(server.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_4xx_other_than_429_is_not_retried(status):
    with FaultServer(default=error(status, "you sent nonsense")) as server:
        result, seconds = timed(complete, spec_for(server), "hello")
        assert isinstance(result, LLMError)
        assert result.reason.startswith(f"HTTP {status}")
        assert "you sent nonsense" in result.reason
        assert len(server.requests) == 1 and result.attempts == 1


def test_connection_refused_names_the_url():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    spec = ModelSpec(name="nobody", base_url=url, model="m", max_retries=1, max_total_s=5.0)
    result, _ = timed(complete, spec, "hello")
    assert isinstance(result, LLMError)
    assert result.reason.startswith(f"connection refused to {url}")
    assert result.attempts == 2


# -- wall-clock limits ----------------------------------------------------------------------------


def test_a_hanging_server_is_cut_at_timeout_s():
    with FaultServer(default=hang(30)) as server:
        spec = spec_for(server, timeout_s=1.0, max_retries=0)
        result, seconds = timed(complete, spec, "hello")
        assert isinstance(result, LLMError)
        assert result.reason.startswith("timed out: no complete response within 1s")
        assert 1.0 <= seconds <= 1.0 + SLACK


def test_retries_of_a_hang_stop_at_max_total_s():
    with FaultServer(default=hang(30)) as server:
        spec = spec_for(server, timeout_s=1.0, max_retries=10, max_total_s=2.5)
        result, seconds = timed(complete, spec, "hello")
        assert isinstance(result, LLMError) and "timed out" in result.reason
        assert seconds <= spec.max_total_s + SLACK
        assert 2 <= len(server.requests) <= 3


def test_a_trickle_is_cut_at_timeout_s_although_bytes_keep_coming():
    with FaultServer(default=trickle("tok " * 200, delay_per_token=0.05)) as server:
        spec = spec_for(server, timeout_s=1.0, max_retries=0)
        result, seconds = timed(complete, spec, "hello")
        assert isinstance(result, LLMError) and "timed out" in result.reason
        assert seconds <= 1.0 + SLACK
        # Streaming had begun: what arrived is counted as spent.
        assert result.tokens_out > 0 and result.tokens_in > 0
    # The abandoned reader thread ends by itself shortly after.
    deadline = time.monotonic() + 3.0
    while any(t.name.startswith("llm-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the abandoned reader thread lingers"
        time.sleep(0.05)


def test_a_slow_but_timely_stream_completes():
    with FaultServer([trickle("one two three four", delay_per_token=0.1)]) as server:
        result, _ = timed(complete, spec_for(server, timeout_s=2.0), "hello")
        assert isinstance(result, Completion) and result.text == "one two three four"


# -- content ------------------------------------------------------------------------------------


def test_empty_completion_is_an_error_and_not_retried():
    with FaultServer([empty(), ok("never asked")]) as server:
        result, _ = timed(complete, spec_for(server), "hello")
        assert isinstance(result, LLMError) and result.reason == "empty completion"
        assert len(server.requests) == 1


@pytest.mark.parametrize("kind", ["error_event", "error_data"])
@pytest.mark.parametrize("api", ["chat", "completion"])
def test_an_error_mid_stream_is_retried_and_reported_with_its_message(kind, api):
    with FaultServer([broken_stream(kind), ok("second try")]) as server:
        assert complete(spec_for(server, api=api), "hello").text == "second try"
    with FaultServer(default=broken_stream(kind)) as server:
        result, _ = timed(complete, spec_for(server, api=api, max_retries=1), "hello")
        assert isinstance(result, LLMError) and len(server.requests) == 2
        assert result.reason.startswith("server error mid-stream (") and "the model is overloaded" in result.reason


def test_a_stream_line_that_is_not_json_fails_at_once_saying_so():
    with FaultServer([broken_stream("not_json"), ok("never asked")]) as server:
        result, _ = timed(complete, spec_for(server), "hello")
        assert isinstance(result, LLMError) and len(server.requests) == 1
        assert result.reason.startswith("unexpected response: JSONDecodeError"), result.reason


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_search_replace_arrives_verbatim(kind):
    """The client does not judge content: the mutation operators must see the broken blocks."""
    with FaultServer(default=malformed(kind)) as server:
        for api in ("chat", "completion"):
            result = complete(spec_for(server, api=api), "fix it")
            assert result.text == MALFORMED[kind]


def test_chat_request_carries_the_parameters():
    with FaultServer([ok("x")]) as server:
        spec = spec_for(server, temperature=0.3, max_tokens=77)
        complete(spec, "the prompt", system="be terse", seed=42, stop=["\n\n"])
        (request,) = server.requests
        assert request.path == "/v1/chat/completions"
        body = request.body
        assert body["model"] == "fake-model" and body["stream"] is True
        assert body["messages"] == [{"role": "system", "content": "be terse"},
                                    {"role": "user", "content": "the prompt"}]
        assert body["temperature"] == 0.3 and body["max_tokens"] == 77
        assert body["seed"] == 42 and body["stop"] == ["\n\n"]


def test_completion_api_joins_system_and_prompt():
    with FaultServer([ok("    return 1")]) as server:
        result = complete(spec_for(server, api="completion"), "def f():\n", system="# Python")
        (request,) = server.requests
        assert request.path == "/v1/completions"
        assert request.body["prompt"] == "# Python\n\ndef f():\n"
        assert result.text == "    return 1"


# -- usage and cost ------------------------------------------------------------------------------


def test_server_sent_usage_is_recorded_and_priced():
    with FaultServer([ok("a b c", usage=(123, 45))]) as server:
        spec = spec_for(server, price_in=1e-6, price_out=3e-6)
        result = complete(spec, "hello")
        assert (result.tokens_in, result.tokens_out) == (123, 45)
        assert not result.estimated
        assert result.cost == pytest.approx(123e-6 + 45 * 3e-6)
        assert server.requests[0].body["stream_options"] == {"include_usage": True}


def test_usage_is_estimated_when_the_server_sends_none():
    prompt = "x" * 101
    with FaultServer([ok("one two three four five")]) as server:
        spec = spec_for(server, price_in=2.0, price_out=5.0)
        result = complete(spec, prompt)
        assert result.estimated
        assert result.tokens_out == 5  # one streamed chunk per word
        assert result.tokens_in == math.ceil(len(prompt) / 4)
        assert result.cost == pytest.approx(result.tokens_in * 2.0 + 5 * 5.0)


def test_tokens_of_a_timed_out_attempt_count_in_the_final_completion():
    with FaultServer([trickle("w " * 100, delay_per_token=0.05), ok("done", usage=(10, 1))]) as server:
        result = complete(spec_for(server, timeout_s=1.0, price_out=1.0), "hello")
        assert result.text == "done" and result.attempts == 2
        assert result.tokens_out > 1  # the trickled tokens plus the answer
        assert result.cost == pytest.approx(result.tokens_out * 1.0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.sampled_from(["429", "503", "ok"]), min_size=1, max_size=6),
       max_retries=st.integers(min_value=0, max_value=4))
def test_attempts_never_exceed_max_retries_plus_one(script, max_retries):
    behaviours = {"429": rate_limit(retry_after=0), "503": rate_limit(retry_after=0, status=503),
                  "ok": ok("fine")}
    with FaultServer([behaviours[b] for b in script], default=rate_limit(retry_after=0)) as server:
        result, _ = timed(complete, spec_for(server, max_retries=max_retries), "hello")
        first_ok = script.index("ok") if "ok" in script else None
        if first_ok is not None and first_ok <= max_retries:
            assert isinstance(result, Completion) and result.attempts == first_ok + 1
        else:
            assert isinstance(result, LLMError) and result.attempts == max_retries + 1
        assert len(server.requests) == min(max_retries, first_ok if first_ok is not None else 99) + 1


# -- keys -----------------------------------------------------------------------------------------

FAKE_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def test_missing_key_variable_is_named_and_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("OPENENDED_TEST_KEY", raising=False)
    with FaultServer() as server:
        result, _ = timed(complete, spec_for(server, api_key_env="OPENENDED_TEST_KEY"), "hello")
        assert isinstance(result, LLMError)
        assert "OPENENDED_TEST_KEY" in result.reason and "not set" in result.reason
        assert server.requests == []


def test_the_key_reaches_the_server_and_nowhere_else(monkeypatch, caplog, capfd):
    monkeypatch.setenv("OPENENDED_TEST_KEY", FAKE_KEY)

    def echo_headers(request):  # a careless server that echoes the request into its error
        return error(400, f"bad request with headers {request.headers}")

    script = [ok("fine"), rate_limit(retry_after=0), respond(echo_headers),
              error(500, "oops"), error(500, "oops"), error(500, "oops")]
    caplog.set_level(logging.DEBUG)  # openai, httpx and our own loggers, all of them
    with FaultServer(script) as server:
        spec = spec_for(server, api_key_env="OPENENDED_TEST_KEY", max_retries=2)
        errors = []
        assert complete(spec, "hello").text == "fine"
        for _ in range(2):
            with pytest.raises(LLMError) as caught:
                complete(spec, "hello")
            errors.append(caught.value)
        assert all(r.headers.get("authorization") == f"Bearer {FAKE_KEY}" for r in server.requests)
        assert len(server.requests) == 6
    assert "HTTP 400" in errors[0].reason and "***" in errors[0].reason
    assert "HTTP 500" in errors[1].reason
    for exc in errors:
        for text in (exc.reason, str(exc), repr(exc), repr(exc.args), repr(pickle.dumps(exc))):
            assert FAKE_KEY not in text
        assert exc.__cause__ is None and exc.__context__ is None
    assert "OPENENDED_TEST_KEY" in repr(spec) and FAKE_KEY not in repr(spec)
    assert caplog.records, "expected the retries to be logged"
    assert FAKE_KEY not in caplog.text
    out, err = capfd.readouterr()
    assert FAKE_KEY not in out and FAKE_KEY not in err


def test_llm_error_survives_pickling():
    exc = LLMError("HTTP 429 rate limited", tokens_in=3, tokens_out=4, cost=0.5, attempts=2)
    back = pickle.loads(pickle.dumps(exc))
    assert (back.reason, back.tokens_in, back.tokens_out, back.cost, back.attempts) == (
        "HTTP 429 rate limited", 3, 4, 0.5, 2)


# -- spec validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("timeout_s", 0), ("max_total_s", -1.0), ("max_retries", -1), ("max_tokens", 0),
    ("price_in", float("nan")), ("base_url", "127.0.0.1:8000"), ("api", "edit"),
    ("api_key_env", ""),
])
def test_bad_spec_fields_are_named(field, value):
    values = dict(name="m", base_url="http://127.0.0.1:1/v1", model="x")
    values[field] = value
    with pytest.raises(ValueError, match=field):
        ModelSpec(**values)


def test_fault_server_answers_plain_json_too():
    """Callers that do not stream (other engineers' tests) get well-formed OpenAI answers."""
    with FaultServer([ok("whole answer", usage=(5, 2)), ok("text answer")]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        assert chat.choices[0].message.content == "whole answer"
        assert chat.usage.prompt_tokens == 5 and chat.usage.completion_tokens == 2
        text = client.completions.create(model="m", prompt="q")
        assert text.choices[0].text == "text answer"
        client.close()


# -- finish reasons: was the answer cut off? ------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "completion"])
def test_the_finish_reason_says_whether_max_tokens_cut_the_answer(api):
    long = "word " * 40
    with FaultServer([too_long(long), too_long("short answer"), cut_off("cut"), unfinished("a b c"),
                      unfinished("a b c d e f")]) as server:
        spec = spec_for(server, api=api, max_tokens=5)
        cut = complete(spec, "go")
        assert (cut.text, cut.finish_reason, cut.truncated) == ("word " * 5, "length", True)
        assert server.requests[-1].body["max_tokens"] == 5
        whole = complete(spec, "go")
        assert (whole.text, whole.finish_reason, whole.truncated) == ("short answer", "stop", False)
        assert complete(spec, "go").truncated
        # No finish reason at all: an answer that used up the whole limit counts as cut off.
        under, full = complete(spec, "go"), complete(spec, "go")
    assert under.finish_reason is None and not under.truncated and under.tokens_out == 3
    assert full.finish_reason is None and full.truncated and full.tokens_out >= 5


def test_tokens_of_a_failed_attempt_do_not_make_the_next_answer_cut_off():
    # attempt 1 streams many pieces and times out (billed); attempt 2 answers two words and names no finish reason
    with FaultServer([trickle("slow " * 100, 0.02), unfinished("a b")]) as server:
        result = complete(spec_for(server, max_tokens=5, timeout_s=0.6, max_retries=1), "go")
    assert result.text == "a b" and result.tokens_out > 5 and result.attempts == 2
    assert result.finish_reason is None and not result.truncated
