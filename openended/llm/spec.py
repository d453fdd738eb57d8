"""A model endpoint and the limits every call to it obeys (what a campaign's ``[[llm.models]]`` becomes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


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
