"""`openended serve` in a real process, read by headless Chromium (Debian's chromium package).

Skipped when /usr/bin/chromium is missing, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import free_port, get, need_chromium
from inspect_campaigns import build_campaign_db, rows, sha256_of

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="session")
def maze_db(tmp_path_factory, ray_address) -> Path:
    return build_campaign_db(tmp_path_factory)["path"]




@pytest.fixture(scope="module")
def server(maze_db, tmp_path_factory):
    """`python -m openended serve DB --port P` on loopback; yields (base url, database name, first line)."""
    need_chromium()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "openended", "serve", str(maze_db), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"openended serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if get(f"{base}/-/versions.json", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"openended serve did not answer within 90 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, maze_db.stem, port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def dump_dom(url: str, profile: Path) -> str:
    """The page as Chromium rendered it (after its scripts ran)."""
    out = subprocess.run(
        [need_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "<html" in out.stdout, out.stderr[-2000:]
    return out.stdout


class Cells(HTMLParser):
    """Rows of datasette's result table: one dict per row, column name -> cell text."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: list[dict] = []
        self.text: list[str] = []
        self._col: str | None = None
        self._body = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._body = True
        elif tag == "tr" and self._body:
            self.rows.append({})
        elif tag == "td" and self._body and self.rows:
            cls = [c for c in (dict(attrs).get("class") or "").split() if c.startswith("col-")]
            self._col = cls[0][4:] if cls else None
            if self._col:
                self.rows[-1][self._col] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._col = None
        elif tag == "tbody":
            self._body = False

    def handle_data(self, data):
        self.text.append(data)
        if self._col is not None:
            self.rows[-1][self._col] += data.strip()


def test_agents_table_renders_in_chromium(server, maze_db, tmp_path):
    base, name, _, _ = server
    html = dump_dom(f"{base}/{name}/agents?_sort_desc=fitness&_size=5", tmp_path / "profile")
    page = Cells(html)
    want = rows(maze_db, "SELECT id, operator, status, fitness FROM agents ORDER BY fitness DESC LIMIT 5")
    got = [(int(r["id"]), r["operator"], r["status"], float(r["fitness"])) for r in page.rows]
    assert got == [(i, op, st, pytest.approx(f)) for i, op, st, f in want]
    total = rows(maze_db, "SELECT COUNT(*) FROM agents")[0][0]
    assert f"{total:,} rows" in " ".join(" ".join(page.text).split())


def test_canned_queries_render_in_chromium(server, maze_db, tmp_path):
    base, name, _, _ = server
    page = Cells(dump_dom(f"{base}/{name}/top_by_fitness?k=3", tmp_path / "p1"))
    want = [r[0] for r in rows(maze_db, "SELECT id FROM agents WHERE fitness IS NOT NULL "
                                        "ORDER BY fitness DESC, id LIMIT 3")]
    assert [int(r["id"]) for r in page.rows] == want
    assert "top by fitness" in " ".join(page.text)

    best = want[0]
    page = Cells(dump_dom(f"{base}/{name}/ancestors?agent_id={best}", tmp_path / "p2"))
    ids = [int(r["id"]) for r in page.rows]
    assert ids[-1] == best and page.rows[0]["parent_id"] == ""  # the root has no parent
    assert all(int(r["parent_id"]) == prev for r, prev in zip(page.rows[1:], ids[:-1], strict=True))

    page = Cells(dump_dom(f"{base}/{name}/operator_success", tmp_path / "p3"))
    (op,) = page.rows
    children, archived = rows(maze_db, "SELECT COUNT(*), SUM(status = 'archived') FROM agents "
                                       "WHERE parent_id IS NOT NULL")[0]
    got = (op["operator"], op["model"], int(op["children"]), int(op["archived"]))
    assert got == ("gaussian", "none", children, archived)


def test_serve_is_read_only_on_loopback_and_not_immutable(server, maze_db):
    base, name, port, log = server
    before = sha256_of(maze_db)
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.split(":")[1], 16) == port:
                    listening.append(local.split(":")[0])
    if listening:  # Linux: the only listening socket is 127.0.0.1 (0100007F, little-endian hex)
        assert listening == ["0100007F"]
    status, body = get(f"{base}/-/databases.json")
    (db,) = [d for d in json.loads(body) if d["name"] == name]
    assert db["is_mutable"] is True  # a live campaign must not be served immutable (-i)
    status, body = get(f"{base}/{name}.json?sql=" + urllib.request.quote("DELETE FROM agents"))
    assert status == 400 and b"SELECT" in body
    status, _ = get(f"{base}/{name}.db")  # no download of the file
    assert status in (403, 404)
    assert rows(maze_db, "SELECT COUNT(*) FROM agents")[0][0] > 0
    assert sha256_of(maze_db) == before
    assert f"read-only at http://127.0.0.1:{port}/{name}" in log.read_text()


def test_every_named_query_is_a_canned_query(maze_db):
    """No browser needed: the metadata datasette gets carries every archive_db/queries/*.sql."""
    import archive_db
    from openended.serve import datasette_metadata

    meta = datasette_metadata(maze_db)
    queries = meta["databases"][maze_db.stem]["queries"]
    assert set(queries) == set(archive_db.query_names()) >= {"ancestors", "top_by_fitness", "operator_success"}
    pkg = Path(archive_db.__file__).parent / "queries"
    for name, q in queries.items():
        assert q["sql"] == (pkg / f"{name}.sql").read_text().strip()
        assert q["description"] and "sqlite3 CLI" not in q["description"]
    assert not any(q.get("write") for q in queries.values())  # no canned query may write


def test_every_canned_query_answers_with_no_parameters(server, maze_db):
    """Opened from the index page (no parameters given), each canned query answers rows, not HTTP 400
    "datatype mismatch" (issue 15): its parameters have defaults."""
    import archive_db

    base, name, _, _ = server
    for query in archive_db.query_names():
        for params in ("", "?k=&status=&limit=&agent_id="):
            status, body = get(f"{base}/{name}/{query}.json{params}")
            assert status == 200, (query, params, body[:300])
            assert json.loads(body)["rows"], (query, params)
    status, body = get(f"{base}/{name}/top_by_fitness.json?k=2")
    assert status == 200 and len(json.loads(body)["rows"]) == 2


def test_an_ordinary_http_error_is_one_log_line(server):
    """A 404 and bad SQL answer their error pages; the console gets one line each, no traceback (issue 15)."""
    base, name, _, log = server
    before = log.read_text()
    assert get(f"{base}/{name}/no_such_table")[0] == 404
    assert get(f"{base}/{name}.json?sql=SELEC+nonsense")[0] == 400
    time.sleep(0.5)
    new = log.read_text()[len(before):]
    assert "Traceback" not in new and "locals" not in new, new[:2000]
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("serve: 404") and lines[1].startswith("serve: 400"), lines
