"""Inspection benchmark: how long status, top, show, lineage, diff and tree take on a 100,000-agent database.

    python bench/inspect.py --out inspect.json [--n 100000] [--db big.db] [--repeats 5]
    python bench/inspect.py --smoke --out inspect.json    # CI: 2,000 agents, one repeat (seconds)

Builds a synthetic campaign database through ArchiveDB (or reuses ``--db`` when it already holds
``--n`` agents): a grid archive over 2 descriptors (32 x 32 cells), maze-sized parameter genomes
(142 float64 values in ``weights.npy``), parents drawn mostly from the last 64 children (a
steady-state search: deep lineages) and 2% from anywhere (branches), 45%
archived, 50% rejected, 5% failed, the last 64 still in flight.

Each command runs in-process through the real CLI (typer's runner: option parsing, the read-only
open, the query, the rendering), both as the human view and with ``--json``; its time is the
median over ``--repeats`` runs of the slower form. ``show``, ``lineage`` and ``diff`` use the
deepest agent. One real ``python -m openended`` process per command is timed for reference (it
adds interpreter start-up and imports). Writes ``max_command_seconds_at_100000`` (target < 1 s).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from archive_db import ArchiveDB, Outcome, Proposal

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = ("status", "top", "show", "lineage", "diff", "tree")
# The deepest evaluated agent (one still in flight has no genome to diff).
DEEPEST = ("SELECT id, depth FROM agents WHERE status IN ('archived', 'rejected') "
           "ORDER BY depth DESC, id LIMIT 1")
BINS = 32
PARAMS = 142
WINDOW = 64


def _npy_header() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(PARAMS))
    return buf.getvalue()[: -PARAMS * 8]


def build(path: Path, n: int = 100_000, *, seed: int = 0, batch: int = 1000) -> dict:
    """Write a synthetic ``n``-agent campaign to ``path`` (replaced). Returns build facts."""
    from openended.config import load_config

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    schema = {"kind": "grid", "space": {"names": ["x", "y"], "lower": [0.0, 0.0], "upper": [1.0, 1.0],
                                        "bins": [BINS, BINS]},
              "fitness_offset": -300.0, "k": 15, "edges": [edges.tolist(), edges.tolist()]}
    config = load_config(None, {"task": "maze-medium", "db": str(path), "archive.kind": "grid",
                                "budget.max_children": n, "seed": seed}).model_dump(mode="json")
    header = _npy_header()
    t0 = time.perf_counter()
    db = ArchiveDB(path)
    db.create_run(name="bench-inspect", task="maze-medium", seed=seed, config=config, descriptor_schema=schema)
    elites: dict[int, tuple[int, float]] = {}
    in_flight = min(WINDOW, n // 10)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        ids = np.arange(start, stop)
        recent = ids - 1 - rng.integers(0, WINDOW, size=len(ids))
        anywhere = (rng.random(len(ids)) * np.maximum(ids, 1)).astype(np.int64)
        parents = np.where(rng.random(len(ids)) < 0.98, np.maximum(recent, 0), anywhere)
        db.propose(Proposal(id=int(i), parent_id=None if i < 4 else int(p), seed=int(i),
                            operator="seed" if i == 0 else "random" if i < 4 else "gaussian")
                   for i, p in zip(ids, parents, strict=True))
        weights = rng.normal(size=(len(ids), PARAMS))
        desc = rng.random((len(ids), 2))
        fitness = -300.0 + 250.0 * ids / n + rng.normal(0.0, 15.0, size=len(ids))
        u = rng.random(len(ids))
        outcomes = []
        for j, i in enumerate(ids.tolist()):
            if i >= n - in_flight:
                continue  # still in flight: stays 'proposed'
            files = {"weights.npy": header + weights[j].tobytes()}
            if u[j] < 0.05:
                outcomes.append(Outcome(id=i, status="failed", files=files, fail_stage="sandbox",
                                        fail_reason="worker died"))
                continue
            f = float(fitness[j])
            cell = int(np.searchsorted(edges[1:-1], desc[j, 0], side="right") * BINS
                       + np.searchsorted(edges[1:-1], desc[j, 1], side="right"))
            old = elites.get(cell)
            event = None
            if u[j] < 0.5 and (old is None or f > old[1]):
                event = "new_cell" if old is None else "improved"
                elites[cell] = (i, f)
            outcomes.append(Outcome(id=i, status="archived" if event else "rejected", files=files, fitness=f,
                                    descriptors=desc[j].tolist(), novelty=float(u[j]), cell=cell if event else None,
                                    archive_event=event, eval_seconds=0.01,
                                    feedback=f"ended at ({desc[j, 0]:.2f}, {desc[j, 1]:.2f})"))
        db.record(outcomes)
        db.set_elites({c: a for c, (a, _) in elites.items()})
        best = max(f for _, f in elites.values()) if elites else None
        db.record_stats(children_done=stop, archive_size=len(elites), coverage=len(elites) / BINS**2,
                        qd_score=sum(f + 300.0 for _, f in elites.values()), best_fitness=best)
    deepest = db.conn.execute(DEEPEST).fetchone()
    db.add_evaluation(deepest[0], stage="full", seconds=0.01, exit_status=0, fitness=0.0, result={"fitness": 0.0})
    db.update_run(status="finished", state={"elapsed_seconds": 0.0})
    db.close()
    return {"build_seconds": time.perf_counter() - t0, "deepest_agent": deepest[0], "deepest_depth": deepest[1]}


def _args(cmd: str, db: Path, agent: int) -> list[str]:
    return {
        "status": ["status", str(db)],
        "top": ["top", str(db), "-k", "10"],
        "show": ["show", str(db), str(agent)],
        "lineage": ["lineage", str(db), str(agent)],
        "diff": ["diff", str(db), str(agent)],
        "tree": ["tree", str(db)],
    }[cmd]


def time_commands(db: Path, agent: int, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median seconds of each command through the CLI in-process, human and --json forms."""
    from typer.testing import CliRunner

    from openended.cli import app

    runner = CliRunner()
    out: dict[str, dict[str, float]] = {}
    for cmd in COMMANDS:
        out[cmd] = {}
        for form, extra in (("human", []), ("json", ["--json"])):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                result = runner.invoke(app, _args(cmd, db, agent) + extra)
                times.append(time.perf_counter() - t0)
                if result.exit_code != 0:
                    raise RuntimeError(f"{cmd} {form} failed: {result.stderr or result.stdout}")
            out[cmd][form] = statistics.median(times)
    return out


def time_processes(db: Path, agent: int) -> dict[str, float]:
    """Wall seconds of one ``python -m openended CMD --json`` process per command (start-up included)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    for cmd in COMMANDS:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "openended", *_args(cmd, db, agent), "--json"], check=True, env=env,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        out[cmd] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--n", type=int, default=100_000, help="agents in the database")
    ap.add_argument("--db", help="database to build or reuse (default: a temporary file)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="2,000 agents, one repeat: checks the script; same keys")
    args = ap.parse_args(argv)
    key_n = args.n  # the headline key names the size asked for; a smoke writes the full run's keys
    if args.smoke:
        args.n, args.repeats = 2000, 1
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "inspect-bench.db"
        facts = None
        if db.exists():
            with ArchiveDB(db, readonly=True) as ro:
                if ro.conn.execute("SELECT COUNT(*) FROM agents").fetchone()[0] == args.n:
                    row = ro.conn.execute(DEEPEST).fetchone()
                    facts = {"build_seconds": None, "deepest_agent": row[0], "deepest_depth": row[1]}
        if facts is None:
            facts = build(db, args.n)
            print(f"built {args.n} agents in {facts['build_seconds']:.1f} s (deepest agent {facts['deepest_agent']}, "
                  f"depth {facts['deepest_depth']})")
        timings = time_commands(db, facts["deepest_agent"], args.repeats)
        processes = time_processes(db, facts["deepest_agent"])
        per_command = {cmd: max(forms.values()) for cmd, forms in timings.items()}
        result = {
            f"max_command_seconds_at_{key_n}": max(per_command.values()),
            "command_seconds": per_command,
            "command_seconds_by_form": timings,
            "process_seconds_with_startup": processes,
            "agents": args.n,
            "db_bytes": db.stat().st_size,
            "repeats": args.repeats,
            "smoke": args.smoke,
            **facts,
        }
    for cmd in COMMANDS:
        print(f"{cmd:8} {per_command[cmd] * 1000:8.1f} ms in-process   {processes[cmd]:6.2f} s as a process")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
