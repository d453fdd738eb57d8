"""Campaign databases and CLI helpers shared by the inspection tests (test_inspect, test_plots,
test_serve_browser, test_export_git).

:func:`build_campaign_db` runs one maze campaign per test session while a reader thread keeps
calling the inspection views and the CLI on the same file, so the "works while a campaign is
writing" promise is tested on real writes. :func:`build_code_db` writes a small code campaign by
hand (text files, models, failures, crossover).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from archive_db import ArchiveDB, Outcome, Proposal
from openended import inspection
from openended.cli import app
from openended.status import campaign_status

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------
# the shared campaign database (built once per session, while a reader thread inspects it)

_CAMPAIGN: dict = {}


def _live_reader(path: Path, stop: threading.Event, log: list) -> None:
    """Inspect the database over and over while the campaign writes; log what each read saw."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cli_done = started = False
    while not stop.is_set():
        time.sleep(0.05)  # leave the driver most of the GIL
        if not path.exists():
            continue
        try:
            with inspection.open_db(path) as db:
                status = campaign_status(path).as_dict()
                best = db.best_agent()
                entry = {"done": status["children_done"], "top": inspection.top(db, 3)}
                if best is not None:
                    steps = inspection.lineage(db, best["id"])
                    entry["lineage"] = [(s["id"], s["parent_id"]) for s in steps]
                    entry["diff"] = inspection.diff(db, best["id"])["from"]
                    entry["show"] = inspection.show(db, best["id"])["agent"]["id"]
                    entry["tree"] = inspection.tree(db, max_nodes=50)["shown"]
            if not cli_done and best is not None:
                # one real CLI process reading the file mid-campaign
                out = subprocess.run([sys.executable, "-m", "openended", "top", str(path), "-k", "2", "--json"],
                                     capture_output=True, text=True, env=env, timeout=120)
                entry["cli"] = (out.returncode, out.stdout, out.stderr)
                cli_done = True
            log.append(entry)
            started = True
        except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
            if started:  # before the first good read the driver may still be creating the file
                log.append({"error": repr(exc)})


def build_campaign_db(tmp_path_factory) -> dict:
    """Run (once per session) a short maze campaign with a grid archive; returns
    ``{"path": Path, "live": [what the reader saw while it ran], "summary": Summary}``."""
    if _CAMPAIGN:
        return _CAMPAIGN
    from openended.config import load_config
    from openended.engine import Campaign

    path = tmp_path_factory.mktemp("inspect") / "maze.db"
    cfg = load_config(None, {"task": "maze-medium", "db": str(path), "budget.max_children": 500, "seed": 1,
                             "sandbox.kind": "inprocess", "archive.kind": "grid", "selection.strategy": "curiosity",
                             "batch_size": 4, "max_in_flight": 2, "stats_every_seconds": 0.2})
    stop, live = threading.Event(), []
    reader = threading.Thread(target=_live_reader, args=(path, stop, live), daemon=True)
    reader.start()
    try:
        summary = Campaign(cfg).run()
    finally:
        stop.set()
        reader.join(timeout=120)
    _CAMPAIGN.update(path=path, live=live, summary=summary)
    return _CAMPAIGN


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    for suffix in ("", "-wal"):  # the main file and any unmerged WAL frames
        p = Path(f"{path}{suffix}")
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def cli(*args: str):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args):
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def rows(path: Path, sql: str, *params):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# a small code campaign built by hand (text files, models, failures, crossover)

CODE_SCHEMA = {"kind": "all", "space": {"names": ["a", "b"], "lower": [0.0, 0.0], "upper": [1.0, 1.0], "bins": [4, 4]},
               "fitness_offset": 0.0, "k": 3}
CODE_CONFIG = {"archive": {"kind": "all"}, "selection": {"strategy": "uniform"},
               "budget": {"max_children": 12, "target_fitness": 2.5}}


def build_code_db(path: Path) -> Path:
    """Agents 0..8: a code genome (agent.py) changed by LLM operators, with a failure, a pending
    child, a crossover and one genome whose file path climbs out of its folder."""
    db = ArchiveDB(path)
    db.create_run(name="code", task="code-task", seed=3, config=CODE_CONFIG, descriptor_schema=CODE_SCHEMA)
    db.propose([
        Proposal(id=0, parent_id=None, operator="seed", seed=0),
        Proposal(id=1, parent_id=0, operator="llm_diff", seed=1, model="gemma"),
        Proposal(id=2, parent_id=1, operator="llm_rewrite", seed=2, model="gpt"),
        Proposal(id=3, parent_id=0, operator="llm_diff", seed=3, model="gemma"),
        Proposal(id=4, parent_id=1, operator="ast", seed=4),
        Proposal(id=5, parent_id=2, parent2_id=1, operator="llm_crossover", seed=5, model="gpt"),
        Proposal(id=6, parent_id=2, operator="llm_diff", seed=6, model="gemma"),
        Proposal(id=7, parent_id=5, operator="llm_diff", seed=7, model="gemma"),
        Proposal(id=8, parent_id=2, operator="ast", seed=8),
    ])
    code = {
        0: "def act(x):\n    return x\n\nx = 1\n",
        1: "def act(x):\n    return x\n\nx = 2\n",
        2: "def act(x):\n    return 2 * x\n\nx = 2\n",
        4: "def act(x):\n    return x\n\nx = 3\n",
        5: "def act(x):\n    return 2 * x\n\nx = 2\ny = 0\n",
        8: "def act(x):\n    return 3 * x\n\nx = 2\n",
    }
    fit = {0: 0.5, 1: 1.0, 2: 3.0, 4: 0.2, 5: 2.0, 8: 2.6}
    desc = {0: [0.1, 0.1], 1: [0.3, 0.1], 2: [0.9, 0.9], 4: [0.12, 0.11], 5: [0.6, 0.4], 8: [0.95, 0.85]}
    status = {0: "archived", 1: "archived", 2: "archived", 4: "rejected", 5: "archived", 8: "archived"}
    db.record([Outcome(id=i, status=status[i], files={"agent.py": code[i].encode(), "notes/README.txt": b"same\n"},
                       fitness=fit[i], descriptors=desc[i], novelty=0.1 * i, cell=i,
                       archive_event="new_cell" if status[i] == "archived" else None,
                       feedback=f"feedback for agent {i}", tokens_in=10 * i, model=None)
               for i in sorted(code)])
    db.record([Outcome(id=3, status="failed", fail_stage="mutation", fail_reason="no SEARCH block matched")])
    db.record([Outcome(id=7, status="archived", files={"escape.py": b"print('out')\n"}, fitness=0.1,
                       descriptors=[0.5, 0.5], cell=7, archive_event="new_cell")])
    db.add_evaluation(2, stage="full", seconds=0.25, exit_status=0, fitness=3.0, result={"fitness": 3.0},
                      stdout_tail="ok\n")
    db.set_elites({0: 0, 1: 1, 2: 2, 5: 5, 7: 7, 8: 8})
    db.record_stats(children_done=7, archive_size=6, coverage=0.25, qd_score=9.2, best_fitness=3.0)
    db.close()
    # The store refuses such a path: agent 7's climbs out as in a database written by hand (or by an
    # older version), which export must still refuse.
    with sqlite3.connect(path) as con:
        con.execute("""UPDATE genomes SET manifest = replace(manifest, '"escape.py"', '"../escape.py"')
                       WHERE hash = (SELECT genome_hash FROM agents WHERE id = 7)""")
    con.close()
    return path




# ---------------------------------------------------------------------------------------------
# a small code campaign run for real: binpack with the LLM-free ast operator

#: A root for the binpack campaign with constants, comparisons and several statements, so the ast
#: operator has edits to make (perturbed constants, swapped operators and statements).
BINPACK_ROOT = '''import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit, with bonuses for a tight fit and a penalty for roomy bins."""
    room = bins - item
    score = -1.0 * room
    tight = room <= 2
    score = score + 3.0 * tight
    roomy = room > 60
    score = score - 5.0 * roomy
    return score
'''


def build_binpack_db(folder: Path, children: int = 60) -> Path:
    """Run a binpack campaign evolved by the ``ast`` operator from :data:`BINPACK_ROOT` (about
    25 s for 60 children on two cores; needs Ray started). Returns the database path."""
    from openended.config import load_config
    from openended.engine import Campaign

    root = folder / "root"
    root.mkdir(parents=True)
    (root / "priority.py").write_text(BINPACK_ROOT)
    path = folder / "binpack.db"
    cfg = load_config(None, {"task": "binpack", "db": str(path), "budget.max_children": children, "seed": 2,
                             "sandbox.kind": "inprocess", "archive.kind": "all", "selection.strategy": "curiosity",
                             "mutation.operator": "ast", "mutation.initial_agents": [str(root)],
                             "batch_size": 1, "max_in_flight": 2})
    Campaign(cfg).run()
    return path
