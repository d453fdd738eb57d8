"""The live dashboard of `openended serve` (/-/dashboard), read by headless Chromium while a real
campaign (`openended run`, a subprocess) is still writing its database.

Chromium is driven over the DevTools protocol (aiohttp's websocket client; aiohttp comes with
ray[default]), so one page stays open and the test reads what the page itself polled and drew
(window.openendedDashboard and the figures' SVG) twice, seconds apart, without reloading it.
Skipped when /usr/bin/chromium is missing, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import free_port, get, need_chromium

ROOT = Path(__file__).resolve().parents[2]





def _rows(path: Path, sql: str, *params):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _wait(what: str, check, timeout: float = 90.0, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path):
        import aiohttp

        self._aiohttp = aiohttp
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / f"{profile.name}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [need_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                 "--window-size=1400,2000", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=err)
        active = profile / "DevToolsActivePort"
        port = _wait("Chromium's DevTools port", lambda: active.exists() and active.read_text().split("\n")[0].strip(),
                     timeout=60, proc=self.proc, log=self.log)
        targets = json.loads(get(f"http://127.0.0.1:{port}/json/list")[1])
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.loop = asyncio.new_event_loop()
        self._id = 0
        self.loop.run_until_complete(self._connect(ws_url))

    async def _connect(self, ws_url: str) -> None:
        self.session = self._aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(ws_url, max_msg_size=256 * 2**20)

    async def _call(self, method: str, params: dict) -> dict:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:  # events arrive in between: skip them
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    def call(self, method: str, **params) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    def evaluate(self, expression: str):
        """The value of a JS expression in the page (a JSON string is decoded)."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise AssertionError(f"JS error in {expression[:80]!r}: {out['exceptionDetails']}")
        value = out["result"].get("value")
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def open(self, url: str) -> None:
        """Navigate and wait for the load event's document."""
        self.call("Page.navigate", url=url)
        _wait(f"page {url}", lambda: self.evaluate(
            f"document.readyState === 'complete' && location.href === {json.dumps(url)}"), timeout=60)

    def close(self) -> None:
        async def shut():
            await self.ws.close()
            await self.session.close()

        try:
            self.loop.run_until_complete(shut())
        finally:
            self.loop.close()
            _stop(self.proc)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium")
    try:
        yield b
    finally:
        b.close()


# ---------------------------------------------------------------------------------------------
# a campaign that keeps running, and `openended serve` on it

CAMPAIGN = """
task = "maze-medium"
db = "{db}"
seed = 4
max_in_flight = 1
batch_size = 4
stats_every_seconds = 0.25

[sandbox]
kind = "inprocess"

[archive]
kind = "grid"

[selection]
strategy = "curiosity"

[budget]
max_children = 10000000
max_wall_seconds = 400
stop_at_target = false
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory, ray_address):
    """A maze-medium campaign running in `openended run` and `openended serve` on its database;
    yields a dict: db, campaign (Popen), base url, name, serve log. Both stop at the end."""
    need_chromium()
    work = tmp_path_factory.mktemp("dashboard")
    db = work / "live.db"
    (work / "campaign.toml").write_text(CAMPAIGN.format(db=db))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    run_log, serve_log = work / "run.log", work / "serve.log"
    with open(run_log, "wb") as out:
        campaign = subprocess.Popen([sys.executable, "-m", "openended", "run", str(work / "campaign.toml"),
                                     "--ray-address", ray_address, "--quiet"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
    serve = None
    try:
        def started():
            try:
                return _rows(db, "SELECT COUNT(*) FROM stats")[0][0] >= 2
            except sqlite3.Error:
                return False

        _wait("the campaign's first stats rows", started, timeout=120, proc=campaign, log=run_log)
        port = free_port()
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen([sys.executable, "-m", "openended", "serve", str(db), "--port", str(port)],
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"

        def answers():
            try:
                return get(f"{base}/-/versions.json", timeout=2)[0] == 200
            except OSError:
                return False

        _wait("openended serve", answers, timeout=90, proc=serve, log=serve_log)
        yield {"db": db, "campaign": campaign, "base": base, "name": db.stem, "serve_log": serve_log,
               "run_log": run_log}
    finally:
        _stop(campaign, signal.SIGINT)
        if serve is not None:
            _stop(serve)


# ---------------------------------------------------------------------------------------------
# what the page holds: its last data and what its figures drew

READ = """JSON.stringify((() => {
  const s = window.openendedDashboard || {polls: 0};
  const one = (sel) => document.querySelector(sel);
  const card = (k) => { const e = one(`.card[data-key="${k}"]`); return e ? e.dataset.value : null; };
  const points = (sel) => { const e = one(sel); return e ? Number(e.dataset.points) : null; };
  const hm = one('#fig-heatmap svg');
  return {
    polls: s.polls, errors: s.errors, lastError: s.lastError, data: s.data || null,
    marker: window.__notReloaded || null,
    dom: {
      status: card('status'), children_done: card('children_done'), archive_size: card('archive_size'),
      best_fitness: card('best_fitness'),
      done_points: points('#fig-progress path[data-series="done"]'),
      qd_points: points('#fig-progress path[data-series="QD score"]'),
      target_line: one('#fig-progress [data-hline]') ? Number(one('#fig-progress [data-hline]').dataset.hline) : null,
      cells: document.querySelectorAll('#fig-heatmap rect.cell').length,
      occupied: hm ? Number(hm.dataset.occupied) : null,
      walls: document.querySelectorAll('#fig-heatmap .task-map line').length,
      start: document.querySelectorAll('#fig-heatmap .task-map .start').length,
      goal: document.querySelectorAll('#fig-heatmap .task-map .goal').length,
      lineage_points: points('#fig-lineage path[data-series="fitness"]'),
      operator_rows: one('#fig-operators svg') ? Number(one('#fig-operators svg').dataset.rows) : 0,
      text: document.body.innerText,
    },
  };
})())"""


def _read_after_poll(browser: Browser, after: int, timeout: float = 60.0) -> dict:
    """The page's state once it has completed more than ``after`` polls."""
    def polled():
        state = browser.evaluate(READ)
        return state if state["polls"] > after else None

    return _wait(f"a dashboard poll after poll {after}", polled, timeout=timeout)


def _check_drawn(state: dict) -> None:
    """What the page drew agrees with the data it polled."""
    d, dom = state["data"], state["dom"]
    assert state["errors"] == 0 and state["lastError"] is None, state["lastError"]
    assert int(dom["children_done"]) == d["totals"]["children_done"]
    assert int(dom["archive_size"]) == d["totals"]["archive_size"]
    assert dom["done_points"] == len(d["progress"]["elapsed"]) == len(d["progress"]["children_done"])
    assert dom["cells"] == dom["occupied"] == d["heatmap"]["occupied"] > 0
    assert dom["target_line"] == pytest.approx(-5.0)  # maze-medium's target fitness
    assert dom["walls"] == len(d["heatmap"]["task_map"]["walls"]) == 11  # maps/medium.txt, boundaries included
    assert dom["start"] == dom["goal"] == 1
    assert dom["lineage_points"] == len(d["lineage"]) >= 1
    assert dom["operator_rows"] == len(d["operators"]) == 1  # gaussian / none


def test_dashboard_follows_a_running_campaign(live, browser):
    base, db = live["base"], live["db"]
    browser.open(f"{base}/-/dashboard")
    browser.evaluate("window.__notReloaded = 1")
    first = _read_after_poll(browser, 0)
    _check_drawn(first)
    assert first["data"]["run"]["status"] == "running" and first["dom"]["status"] == "running"

    # a few polls later, the same page (not reloaded) shows a campaign that moved on
    time.sleep(3.0)
    second = _read_after_poll(browser, first["polls"] + 1)
    _check_drawn(second)
    assert second["marker"] == 1
    a, b = first["data"], second["data"]
    assert b["generated_at"] > a["generated_at"]
    assert b["totals"]["children_done"] > a["totals"]["children_done"]
    assert b["progress"]["rows"] > a["progress"]["rows"]
    assert b["progress"]["elapsed"][-1] > a["progress"]["elapsed"][-1]
    assert b["progress"]["children_done"][-1] > a["progress"]["children_done"][-1]
    assert b["totals"]["archive_size"] >= a["totals"]["archive_size"]
    assert b["totals"]["best_fitness"] >= a["totals"]["best_fitness"]
    assert b["operators"][0]["children"] > a["operators"][0]["children"]
    assert b["totals"]["children_per_second"] > 0
    assert int(second["dom"]["children_done"]) > int(first["dom"]["children_done"])

    # the JSON route the page polls is there for anyone to read
    status, body = get(f"{base}/-/dashboard.json")
    assert status == 200
    assert json.loads(body)["totals"]["children_done"] >= b["totals"]["children_done"]

    # once the campaign stops, the next polls show exactly what the database holds
    _stop(live["campaign"], signal.SIGINT)
    assert live["campaign"].returncode == 0, live["run_log"].read_text()[-2000:]
    def stopped():
        state = browser.evaluate(READ)
        return state if state["data"]["run"]["status"] != "running" else None

    final = _wait("the page to show the stopped campaign", stopped, timeout=30)
    final = _read_after_poll(browser, final["polls"])  # one more poll, after the last write
    _check_drawn(final)
    d = final["data"]
    done, failed = _rows(db, "SELECT SUM(status IN ('evaluated', 'archived', 'rejected')), SUM(status = 'failed') "
                             "FROM agents")[0]
    assert (d["totals"]["children_done"], d["totals"]["children_failed"]) == (done, failed)
    assert d["totals"]["archive_size"] == _rows(db, "SELECT COUNT(*) FROM elites")[0][0]
    assert d["totals"]["best_fitness"] == pytest.approx(_rows(db, "SELECT MAX(fitness) FROM agents")[0][0])
    assert d["progress"]["rows"] == _rows(db, "SELECT COUNT(*) FROM stats")[0][0]
    last_stats = _rows(db, "SELECT children_done, children_failed FROM stats ORDER BY at DESC, id DESC LIMIT 1")[0]
    assert (d["progress"]["children_done"][-1], d["progress"]["children_failed"][-1]) == last_stats
    # the headline (counted from the agents) and the curves (the engine's counters) end on the same numbers
    assert (d["totals"]["children_done"], d["totals"]["children_failed"]) == last_stats

    from openended import inspection

    with inspection.open_db(db) as adb:  # the archive heatmap and the best lineage, as the CLI computes them
        hm = inspection.heatmap(adb)
        lineage = [row["id"] for row in adb.best_lineage()]
        ops = adb.named_query("operator_success")
    assert d["heatmap"]["occupied"] == hm.occupied and d["heatmap"]["elites"] == hm.elites
    got = [[None if v is None else pytest.approx(v) for v in row] for row in d["heatmap"]["values"]]
    assert got == [[None if v != v else v for v in row] for row in hm.values.tolist()]
    assert [s["id"] for s in d["lineage"]] == lineage and d["lineage_length"] == len(lineage)
    assert [(o["operator"], o["children"], o["archived"]) for o in d["operators"]] == \
        [(o["operator"], o["children"], o["archived"]) for o in ops]


def test_canned_queries_from_the_index_page_in_chromium(live, browser):
    """From datasette's index page: the dashboard link, the database, then each canned query answers rows."""
    import archive_db

    base, name = live["base"], live["name"]
    browser.open(f"{base}/")
    links = browser.evaluate("JSON.stringify([...document.querySelectorAll('a')].map(a => a.href))")
    assert f"{base}/-/dashboard" in links
    assert f"{base}/{name}" in links
    browser.open(f"{base}/{name}")
    queries = browser.evaluate(
        "JSON.stringify([...document.querySelectorAll('h2#queries + ul a')].map(a => a.href))")
    assert sorted(queries) == sorted(f"{base}/{name}/{q}" for q in archive_db.query_names())
    for url in queries:
        browser.open(url)
        page = browser.evaluate("JSON.stringify({rows: document.querySelectorAll('table.rows-and-columns tbody tr')"
                                ".length, title: document.title, text: document.body.innerText.slice(0, 300)})")
        assert page["rows"] > 0, (url, page)
        assert "Error" not in page["title"], (url, page)


# ---------------------------------------------------------------------------------------------
# no data yet: an empty campaign, one descriptor, no descriptor space (in-process datasette)


def _empty_db(path: Path, schema: dict, *, agents: int = 0) -> Path:
    from archive_db import ArchiveDB, Outcome, Proposal

    db = ArchiveDB(path)
    db.create_run(name="empty", task="no-such-task", seed=0, config={}, descriptor_schema=schema)
    if agents:
        db.propose([Proposal(id=i, parent_id=None if i == 0 else 0, operator="seed" if i == 0 else "gaussian", seed=i)
                    for i in range(agents)])
        db.record([Outcome(id=i, status="archived", files={"w.txt": str(i).encode()}, fitness=float(i),
                           descriptors=[0.1 + 0.2 * i], cell=i, archive_event="new_cell") for i in range(agents)])
        db.set_elites({i: i for i in range(agents)})
    db.close()
    return path


ONE_D = {"kind": "grid", "space": {"names": ["a"], "lower": [0.0], "upper": [1.0], "bins": [5]}}


def _dashboard_json(path: Path) -> tuple[int, dict, int]:
    from openended.serve import make_datasette

    ds = make_datasette(path)

    async def fetch():
        await ds.invoke_startup()
        data = await ds.client.get("/-/dashboard.json")
        page = await ds.client.get("/-/dashboard")
        return data.status_code, data.json(), page.status_code

    return asyncio.run(fetch())


def test_an_empty_campaign_says_no_data_yet(tmp_path):
    status, d, page = _dashboard_json(_empty_db(tmp_path / "empty.db", ONE_D))
    assert status == 200 and page == 200
    assert d["totals"]["children_done"] == 0 and d["totals"]["best_agent"] is None
    assert d["progress"]["rows"] == 0 and d["progress"]["elapsed"] == []
    assert set(d["notes"]) == {"progress", "heatmap", "lineage", "operators", "failures"}
    assert "no stats yet" in d["notes"]["progress"] and "no elite" in d["notes"]["heatmap"]
    assert d["heatmap"]["task_map"] is None  # the task does not load: no map, no error


def test_one_descriptor_is_one_row_and_no_space_is_a_note(tmp_path):
    status, d, _ = _dashboard_json(_empty_db(tmp_path / "one.db", ONE_D, agents=3))
    assert status == 200
    hm = d["heatmap"]
    assert hm["n_descriptors"] == 1 and len(hm["values"]) == 1 and hm["y_name"] == ""
    assert hm["values"][0] == [0.0, 1.0, 2.0, None, None]  # descriptors 0.1, 0.3, 0.5 in bins of 0.2
    assert hm["occupied"] == 3 and "one descriptor" in hm["note"]
    assert [s["id"] for s in d["lineage"]] == [0, 2]
    status, d, _ = _dashboard_json(_empty_db(tmp_path / "nospace.db", {"kind": "grid"}))
    assert status == 200 and "no descriptor space" in d["heatmap"]["note"]


def test_an_empty_campaign_renders_no_data_yet_in_chromium(tmp_path, browser):
    path = _empty_db(tmp_path / "empty.db", ONE_D)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "openended", "serve", str(path), "--port", str(port)],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"

        def answers():
            try:
                return get(f"{base}/-/versions.json", timeout=2)[0] == 200
            except OSError:
                return False

        _wait("openended serve", answers, timeout=90, proc=serve, log=log)
        browser.open(f"{base}/-/dashboard")
        state = _read_after_poll(browser, 0)
        assert state["errors"] == 0 and state["lastError"] is None, state["lastError"]
        text = state["dom"]["text"]
        assert "no elite in the archive yet" in text
        assert "no data yet: no evaluated agent yet" in text and "no failed children" in text
        assert "no data yet: no stats yet" in text
        assert state["dom"]["cells"] == 0 and state["dom"]["done_points"] is None  # no curve drawn
        assert browser.evaluate("document.querySelectorAll('#fig-progress svg').length") == 0
    finally:
        _stop(serve)
    assert "Traceback" not in log.read_text()
