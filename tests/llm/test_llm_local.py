"""The embedded model for real: llama.cpp's server with Gemma 3 270M, through the same client as
remote models (the embedded_model fixture: skipped without it by hand, a failure under CI=true)."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest

from openended.llm import LLMError, LocalModelServer, complete, local_spec
from openended.llm.local import PORTABLE_CMAKE_ARGS


@pytest.fixture(scope="module")
def server(embedded_model):
    # A key in our environment must not reach the server process.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENENDED_PROBE_API_KEY", "sk-must-not-reach-the-server")
        with LocalModelServer() as running:
            yield running


def test_completion_comes_back_with_tokens_counted(server):
    spec = local_spec(server, max_tokens=40)
    result = complete(spec, "def add(a, b):\n    return", seed=7)
    assert result.text.strip()
    assert result.model == "local-gemma3-270m"
    assert 0 < result.tokens_out <= 40 + 1
    assert result.tokens_in > 0 and result.cost == 0.0
    assert result.seconds < spec.timeout_s


def test_a_too_short_timeout_is_reported_not_hung(server):
    spec = local_spec(server, max_tokens=2000, timeout_s=0.5, max_retries=0, max_total_s=1.0)
    with pytest.raises(LLMError, match="timed out"):
        complete(spec, "Write a very long story about a dragon.\n")


def test_the_server_is_listed_and_sees_no_secrets(server):
    with urllib.request.urlopen(server.base_url + "/models", timeout=5) as response:
        assert server.model in response.read().decode()
    environ = open(f"/proc/{server.process.pid}/environ", "rb").read().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert "OPENENDED_PROBE_API_KEY" not in names
    assert not [name for name in names if "KEY" in name or "SECRET" in name or "TOKEN" in name]


def test_stop_closes_the_port_and_reaps_the_process(embedded_model):
    server = LocalModelServer().start()
    process, port = server.process, server.port
    assert process.poll() is None
    server.stop()
    assert process.returncode is not None  # reaped, not a zombie
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()  # idempotent


def test_a_server_that_crashes_is_named_by_its_signal_and_keeps_its_log(embedded_model):
    server = LocalModelServer().start()  # start() has had one token back: the model decodes here
    try:
        assert server.exited() is None
        os.kill(server.process.pid, signal.SIGSEGV)  # how a crash of llama.cpp looks from outside
        server.process.wait(30)
        ended = server.exited()
        assert ended is not None and "killed by SIGSEGV" in ended and f"log {server.log_path}" in ended
        assert PORTABLE_CMAKE_ARGS in ended  # a crash names the build that avoids the known one
        with pytest.raises(RuntimeError, match=r"killed by SIGSEGV on its first completion \(.*GGML_NATIVE=OFF"):
            server._check_decodes()  # what start() says when the first token crashes it
    finally:
        log = server.log_path
        server.stop()
    assert log is not None and log.exists() and log.read_text(), "a crashed server's log is kept"
    log.unlink()


def test_ci_and_the_readme_build_llama_cpp_as_the_crash_hint_says():
    root = Path(__file__).resolve().parents[2]
    for name in (".ci/run", "README.md"):
        assert PORTABLE_CMAKE_ARGS in (root / name).read_text(), name
