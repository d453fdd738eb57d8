"""What the browser tests share: headless Chromium (Debian's package), a free port, a plain GET."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


def need_chromium() -> str:
    """Chromium's path; skip without it by hand, fail under CI=true."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing (install Debian's chromium package); CI must run the browser test")
    pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """(HTTP status, body), an HTTP error included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
