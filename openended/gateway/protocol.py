"""The OpenAI wire format as the gateway reads and writes it: a request body checked into a
:class:`Call` (or :class:`Refusal`, an HTTP error with an OpenAI-style body), and the answers.

Everything a sandbox sends is hostile: the body must be a JSON object with the fields the endpoint
needs, each of the right type and size; anything else is refused before a model sees it. Unknown
fields are ignored (standard clients send many); the ones the existing client can forward are
``model``, ``messages``/``prompt``, ``max_tokens`` (or ``max_completion_tokens``), ``temperature``,
``stop``, ``seed`` and ``stream``.

A chat conversation reaches the model through :func:`openended.llm.complete`, which takes a system
text and one prompt: the system (and developer) messages become the system text; a single user
message is the prompt; a longer conversation is written into the prompt one ``role: content``
paragraph per message.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Literal

Endpoint = Literal["chat", "completion"]
MAX_MESSAGES = 512
MAX_STOPS = 4
ROLES = ("system", "developer", "user", "assistant", "tool")


class Refusal(Exception):
    """A request answered with an HTTP error that never reaches a model."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", *,
                 code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.code)


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


@dataclass(frozen=True)
class Call:
    """A checked request: what the gateway forwards through ``openended.llm.complete``."""

    endpoint: Endpoint
    model: str | None  # None: the gateway's default model
    prompt: str
    system: str | None
    max_tokens: int | None
    temperature: float | None
    stop: list[str] | None
    seed: int | None
    stream: bool
    include_usage: bool


def _bad(message: str) -> Refusal:
    return Refusal(400, message)


def _text_of(content: object, where: str) -> str:
    """A message's content: a string, or a list of text parts (``{"type": "text", "text": ...}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise _bad(f"{where}: only text content parts are supported")
            pieces.append(part["text"])
        return "".join(pieces)
    raise _bad(f"{where}: content must be a string or a list of text parts")


def _conversation(messages: object) -> tuple[str | None, str]:
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"'messages' holds more than {MAX_MESSAGES} messages")
    system: list[tuple[str, str]] = []
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{where} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role must be one of {', '.join(ROLES)}")
        text = _text_of(message.get("content"), f"{where}.content")
        (system if role in ("system", "developer") else turns).append((role, text))
    if not turns:
        raise _bad("'messages' holds no user message")
    if len(turns) == 1 and turns[0][0] == "user":
        prompt = turns[0][1]
    else:
        prompt = "\n\n".join(f"{role}: {text}" for role, text in turns) + "\n\nassistant:"
    return ("\n\n".join(text for _, text in system) or None), prompt


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise _bad(f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


def _integer(body: dict, name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 2**53:
        raise _bad(f"'{name}' must be an integer >= {low}")
    return value


def parse_call(raw: bytes, endpoint: Endpoint) -> Call:
    """Check a request body; a :class:`Refusal` (HTTP 400) says what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _bad("'model' must be a non-empty string")
    if endpoint == "chat":
        system, prompt = _conversation(body.get("messages"))
    else:
        prompt_field = body.get("prompt")
        if isinstance(prompt_field, list) and len(prompt_field) == 1:
            prompt_field = prompt_field[0]
        if not isinstance(prompt_field, str):
            raise _bad("'prompt' must be a string")
        system, prompt = None, prompt_field
    if not prompt:
        raise _bad("the prompt is empty")
    n = _integer(body, "n", 1)
    if n not in (None, 1):
        raise _bad("'n' must be 1: the gateway returns one choice")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOPS
                             or not all(isinstance(s, str) and s for s in stop)):
        raise _bad(f"'stop' must be a string or a list of at most {MAX_STOPS} non-empty strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return Call(endpoint=endpoint, model=model, prompt=prompt, system=system, max_tokens=max_tokens,
                temperature=_number(body, "temperature", 0.0, 2.0), stop=stop or None,
                seed=_integer(body, "seed", -(2**53)), stream=stream, include_usage=include_usage)


# ------------------------------------------------------------------------------------------------
# Answers


def usage_body(tokens_in: int, tokens_out: int) -> dict:
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def answer(call: Call, number: int, model: str, text: str, tokens_in: int, tokens_out: int) -> dict:
    """The whole (non-streamed) answer, as OpenAI's API shapes it."""
    if call.endpoint == "chat":
        choice: dict = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}
        kind = "text_completion"
    return {"id": f"gw-{number}", "object": kind, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage_body(tokens_in, tokens_out)}


def stream_events(call: Call, number: int, model: str, text: str, tokens_in: int, tokens_out: int) -> bytes:
    """The answer as server-sent events (the text in one chunk, sent once the model is done)."""
    chat = call.endpoint == "chat"
    base: dict[str, object] = {"id": f"gw-{number}", "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model}

    def choice(piece: str, finish: str | None) -> dict:
        if chat:
            return {"index": 0, "delta": {"role": "assistant", "content": piece} if piece else {},
                    "finish_reason": finish}
        return {"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}

    events = [dict(base, choices=[choice(text, None)]), dict(base, choices=[choice("", "stop")])]
    if call.include_usage:
        events.append(dict(base, choices=[], usage=usage_body(tokens_in, tokens_out)))
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events) + b"data: [DONE]\n\n"
