"""A node's Docker engine stops answering mid-campaign, then comes back: no child fails for it.

The fault is real: the campaign's Ray workers reach the Docker engine only through a Unix socket that relays
to the engine's own (``DOCKER_HOST``), and stopping the relay cuts every connection and removes the socket,
as an engine that died would. A worker whose evaluation failed that way finds the engine gone and hands its
children back (:class:`openended.engine.jobs.EngineLost`); the node gets no evaluations until a probe finds
the engine again, and the campaign ends as if nothing had happened.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from conftest import containers_left, count_in, toy

from archive_db.integrity import check_integrity
from openended.sandbox import campaign_label

# the engine this machine's Docker client uses (a unix:// DOCKER_HOST, or the default socket)
ENGINE_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
BUDGET = 60
COLUMNS = "id, parent_id, operator, seed, status, genome_hash, fitness, descriptors"


class EngineRelay:
    """A Unix socket at ``path`` relaying each connection to the Docker engine's socket, while started."""

    def __init__(self, path: Path):
        self.path = path
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> EngineRelay:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self) -> None:
        """The engine is gone, as seen through the relay: no socket, every connection cut."""
        with self._lock:
            server, self._server = self._server, None
            if server is not None:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
                server.close()
            self.path.unlink(missing_ok=True)
            for conn in self._open:
                _cut(conn)
            self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # stopped
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with self._lock:
                if self._server is not server:  # accepted as it stopped: the engine is gone for it too
                    _cut(client)
                    engine.close()
                    return
                try:
                    engine.connect(ENGINE_SOCKET)
                except OSError:
                    _cut(client)
                    engine.close()
                    continue
                self._open.update((client, engine))
            ends = [threading.Thread(target=self._pump, args=(a, b), daemon=True)
                    for a, b in ((client, engine), (engine, client))]
            for end in ends:
                end.start()
            threading.Thread(target=self._close_after, args=(ends, client, engine), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # half-close: the other side may still answer
        except OSError:
            pass

    def _close_after(self, ends: list[threading.Thread], *conns: socket.socket) -> None:
        for end in ends:
            end.join()
        with self._lock:
            for conn in conns:
                self._open.discard(conn)
                conn.close()


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def _cli(python, env, db: Path, *extra: str) -> subprocess.Popen:
    # "--ray-address local": a Ray of the campaign's own, whose workers inherit DOCKER_HOST from it
    cmd = [python, "-m", "openended", "run", "--task", toy("slow"), "--db", str(db), "--budget", str(BUDGET),
           "--sandbox", "docker", "--max-in-flight", "2", "--batch-size", "4", "--seed", "3", "--quiet",
           "--ray-address", "local", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _store(db: Path) -> list:
    con = sqlite3.connect(db)
    try:
        assert check_integrity(con).ok
        return con.execute(f"SELECT {COLUMNS} FROM agents ORDER BY id").fetchall()
    finally:
        con.close()


def test_an_engine_that_stops_answering_then_returns_costs_no_child(docker_engine, tmp_path, python, cli_env):
    ref = tmp_path / "ref.db"
    done = _cli(python, cli_env, ref)
    out, _ = done.communicate(timeout=300)
    assert done.returncode == 0, out[-4000:]

    relay = EngineRelay(tmp_path / "engine.sock").start()
    env = {**cli_env, "DOCKER_HOST": f"unix://{relay.path}"}
    db = tmp_path / "lost.db"
    proc = _cli(python, env, db)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while count_in(db, "SELECT COUNT(*) FROM agents WHERE finished_at IS NOT NULL") < 12:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.05)
        relay.stop()
        while not any("gets no evaluations" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.1)
        # results of tasks that ended before the stop may still be recorded: the count settles, then holds
        stalled, settled = -1, count_in(db, "SELECT COUNT(*) FROM agents WHERE finished_at IS NOT NULL")
        while settled != stalled:
            stalled = settled
            time.sleep(1.0)
            settled = count_in(db, "SELECT COUNT(*) FROM agents WHERE finished_at IS NOT NULL")
        time.sleep(3)  # the engine stays away a while: nothing is evaluated, nothing fails
        assert count_in(db, "SELECT COUNT(*) FROM agents WHERE status = 'failed'") == 0
        assert count_in(db, "SELECT COUNT(*) FROM agents WHERE finished_at IS NOT NULL") == stalled
        relay.start()
        proc.wait(timeout=300)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        relay.stop()
    out = "".join(lines)
    assert proc.returncode == 0, out[-4000:]
    assert "no Docker engine answers" in out and "is usable again" in out, out[-4000:]
    assert stalled < BUDGET
    # The same children, seeds, genomes and results as the campaign the engine never left: none failed.
    rows = _store(db)
    assert rows == _store(ref)
    assert [r for r in rows if r[4] == "failed"] == []
    assert containers_left(campaign_label(db)) == []


def test_the_relay_is_the_only_way_to_the_engine(docker_engine, tmp_path):
    """The fault is what the test says: with the relay stopped, a client of it finds no engine."""
    relay = EngineRelay(tmp_path / "engine.sock").start()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(30)
    probe.connect(str(relay.path))
    probe.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    answer = probe.recv(4096)
    probe.close()
    relay.stop()
    assert answer.startswith(b"HTTP/1.") and b"OK" in answer
    assert not os.path.exists(relay.path)
    late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        late.connect(str(relay.path))
        raise AssertionError("connected to a stopped relay")
    except OSError:
        pass
    finally:
        late.close()
