"""Storage and inspection at scale (issue 18): bytes a campaign stores per child; inspection at 10^7 agents.

    python bench/scale.py --out scale.json            # a real 5,000-child maze campaign (four ways), 2,000 code
                                                      # children, and a synthetic 10^7-agent database (~5 GB)
    python bench/scale.py --only bytes --out s.json   # the bytes and share figures alone (a minute or two)
    python bench/scale.py --only inspection --agents 1000000 --tmp /big/disk --out s.json
    python bench/scale.py --smoke --out scale.json    # CI: 300 maze children (four times), 200 code children,
                                                      # 2,000 synthetic agents (under a minute)

Writes:

- ``bytes_per_child_params``: a real maze campaign (``maze-medium``, seed 0, the default novelty search and
  sandbox) through the engine: the database file after a checkpoint, divided by its children. Target <= 400.
  ``bytes_per_child_params_uncompacted``: the same campaign with every genome stored in full
  (``ArchiveDB.materialise_every = 1``, what the store did before recipes); ``params_bytes_by_table``: where
  the compact one's bytes go, per child (SQLite's dbstat).
- ``bytes_per_child_code``: binpack-sized code children (the ``ast`` operator on a 0.9 KB binpack agent, each
  from a random earlier child, recorded as a code campaign records them: mutated, then evaluated with binpack's
  metrics and feedback and one evaluation row). ``code_blob_bytes``: all distinct code blobs with zlib 6, zstd 3
  and 19, and zstd 19 with the parent's file as a dictionary, beside what the store holds (``stored``: each
  file as the smallest of raw, zlib and a zstd delta of its parent's file).
- ``children_per_day_100gb_*``: how many children 100 GB holds, per task.
- ``max_command_seconds_at_N`` (N = ``--agents``, 10^7 by default; a smoke writes the same key): the slowest
  of status, top, show, lineage and diff (``--json``, in-process through the CLI, median of 3) on a synthetic
  finished campaign written straight into SQLite, the shape of ``bench/inspect_bench.py``'s (show, lineage
  and diff on the deepest agent). Target < 2 s.
- ``resume_seconds_at_N``, ``noop_children_per_s_at_N``, ``driver_rss_mb_at_N`` (N = ``--agents``):
  ``bench/scale_resume.py`` on a stopped no-op campaign whose store holds N agents (written straight into
  SQLite): the real ``Campaign`` resumed in a fresh process until its first batch is back, the loop's
  children per second after that (``--resume-children``), the driver's peak memory;
  ``archive_bytes_per_member``: resident bytes per member of a restored ``all`` archive (``--members``);
  ``archive_restore_seconds`` its restore from dicts, ``archive_restore_seconds_columns`` from columns.
- ``maze_engine_share_of_simulator``: the maze campaign's children per second (after its first 500, so
  that imports and the roots are left out) over the raw simulator's evaluations per second on the same Ray
  (2 CPUs: one task per CPU simulating batches of the campaign's ``batch_size``, 64), measured in the same run
  (``bench/scale_share.py``). ``maze_engine_share_of_simulator_at_task_size``: the same over the simulator
  in batches of the children the campaign actually sends a task (``maze_children_per_task``: 32, a proposal
  block of the reproducible mode; the simulator's cost is mostly per step, so 32 robots cost ~70% of 64).
  ``maze_free_share_of_simulator``: the same campaign in the free mode (``--free``: tasks of the batch size, 64,
  where the reproducible mode's staleness of 64 makes tasks of 32), in the same sandbox (Docker where it runs).
  ``maze_loop_share_of_simulator``: the same campaign evaluated in the Ray workers' own processes (the
  ``inprocess`` sandbox: no container) in the free mode, between the same two simulator measures: the loop
  alone (Ray, serialisation, the store, the archive, selection).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from archive_db import ArchiveDB, Evaluation, Outcome, Proposal
from openended.mutation.ast_edit import ast_mutate
from openended.tasks import load_task

GB100 = 100 * 10**9

# A binpack agent of the size a model's rewrite reaches (FunSearch's evolved heuristics are 20-40 lines);
# binpack's own seed (best fit, 269 bytes) leaves the ast operator too little to edit.
BINPACK_AGENT = b'''import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Score every bin that can take the item; the item goes to the highest score.

    Prefer bins the item nearly fills; penalise leaving a gap too small for a typical item;
    break ties towards fuller bins, and open a new bin only when nothing fits well.
    """
    remaining = bins - item
    score = -remaining.astype(float)
    tight = remaining <= 0.05 * bins.max()
    score[tight] += 10.0 * (1.0 - remaining[tight] / (item + 1e-9))
    awkward = (remaining > 0) & (remaining < 0.25 * item)
    score[awkward] -= 3.5 * (0.25 * item - remaining[awkward])
    roomy = remaining > 2.0 * item
    score[roomy] -= 0.75 * np.log1p(remaining[roomy] - 2.0 * item)
    fill = 1.0 - bins / (bins.max() + 1e-9)
    score += 0.5 * fill ** 2
    if item > 0.6 * bins.max():
        score += 2.0 * (remaining < 0.1 * bins.max())
    return score
'''


def stored_bytes(path: Path) -> int:
    """The database's bytes once its WAL is checkpointed into it (what the campaign leaves on disk)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return path.stat().st_size


def by_table(path: Path, children: int) -> dict[str, float]:
    """Bytes per child of each table and index (pages, as SQLite's dbstat counts them)."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    except sqlite3.OperationalError:  # an SQLite built without dbstat
        return {}
    finally:
        con.close()
    return {name: round(size / children, 1) for name, size in rows if size / children >= 0.5}


# The loop alone: evaluation in the worker's process (a maze genome is numbers; its evaluator is the task's own),
# outcomes applied as they arrive, so a task carries the batch, not half a proposal block.
LOOP_ONLY = {"sandbox.kind": "inprocess", "deterministic": False}


def maze_campaign(db: Path, children: int, ray_address: str, every: int, **extra: Any) -> int:
    """Run a real maze campaign of ``children`` with the store materialising every ``every`` hops (``extra``:
    more config overrides); its children."""
    from openended.config import load_config
    from openended.engine import Campaign

    ArchiveDB.materialise_every = every
    overrides = {"task": "maze-medium", "db": str(db), "seed": 0, "budget.max_children": children,
                 "budget.stop_at_target": False, "ray_address": ray_address, "stats_every_seconds": 60.0, **extra}
    summary = Campaign(load_config(None, overrides)).run()
    if summary.status != "finished":
        raise RuntimeError(f"the maze campaign did not finish: {summary}")
    with ArchiveDB(db, readonly=True) as store:
        return store.next_agent_id()


def params_figures(tmp: Path, children: int) -> dict[str, Any]:
    import ray

    from openended.config import load_config

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    default_every = ArchiveDB.materialise_every
    from scale_share import engine_children_per_s, simulator_evals_per_s, task_children

    defaults = load_config(None, {})
    batch, per_task, sim_seconds = defaults.batch_size, task_children(defaults), (1.0 if children < 1000 else 5.0)
    try:
        raw = [simulator_evals_per_s(sim_seconds, batch)]
        at_task = [simulator_evals_per_s(sim_seconds, per_task)]
        started = time.monotonic()
        n = maze_campaign(tmp / "maze.db", children, address, default_every)
        seconds = time.monotonic() - started
        maze_campaign(tmp / "maze-free.db", children, address, default_every, deterministic=False)
        maze_campaign(tmp / "maze-loop.db", children, address, default_every, **LOOP_ONLY)
        raw.append(simulator_evals_per_s(sim_seconds, batch))
        at_task.append(simulator_evals_per_s(sim_seconds, per_task))
        full = maze_campaign(tmp / "maze-full.db", children, address, 1)
    finally:
        ArchiveDB.materialise_every = default_every
        ray.shutdown()
    compact_bytes, full_bytes = stored_bytes(tmp / "maze.db"), stored_bytes(tmp / "maze-full.db")
    with ArchiveDB(tmp / "maze.db", readonly=True) as store:
        recipes = store.conn.execute("SELECT COUNT(*) FROM recipes").fetchone()[0]
    per_child = compact_bytes / n
    def rate(db: str) -> float:  # a campaign's children per second, after its first 500
        return engine_children_per_s(tmp / db, min(500, n // 4))

    engine = rate("maze.db")
    return {
        "maze_engine_share_of_simulator": round(engine / float(np.mean(raw)), 3),
        "maze_engine_children_per_s": round(engine, 1), "maze_simulator_evals_per_s": [round(r, 1) for r in raw],
        "maze_engine_share_of_simulator_at_task_size": round(engine / float(np.mean(at_task)), 3),
        "maze_free_share_of_simulator": round(rate("maze-free.db") / float(np.mean(raw)), 3),
        "maze_loop_share_of_simulator": round(rate("maze-loop.db") / float(np.mean(raw)), 3),
        "maze_simulator_evals_per_s_at_task_size": [round(r, 1) for r in at_task], "maze_children_per_task": per_task,
        "params_children": n, "params_campaign_seconds": round(seconds, 1), "params_compact_children": recipes,
        "bytes_per_child_params": round(per_child, 1),
        "bytes_per_child_params_uncompacted": round(full_bytes / full, 1),
        "params_bytes_by_table": by_table(tmp / "maze.db", n),
        "children_per_day_100gb_params": int(GB100 / per_child),
    }


def binpack_outcome(i: int, rng: np.random.Generator) -> Outcome:
    """What binpack's evaluator returns for a child (evaluate.py: fitness, descriptors, metrics, feedback)."""
    excess = float(rng.uniform(1, 8))
    per = [round(excess + float(rng.normal(0, 0.3)), 4) for _ in range(5)]
    fullest, new_bin, fill = (float(x) for x in rng.uniform(0, 1, size=3))
    bins = int(rng.integers(2500, 2700))
    metrics = {"excess_pct": excess, "excess_pct_per_instance": per, "bins": bins, "lower_bound": bins - 120,
               "fullest_share": fullest, "new_bin_share": new_bin, "mean_fill": fill,
               "full_bins_share": float(rng.uniform(0, 1)), "seconds": round(float(rng.uniform(0.8, 1.4)), 3)}
    feedback = (f"5 instances: {bins} bins used vs lower bound {bins - 120} ({excess:.2f}% excess; 0% is "
                f"perfect). When an opened bin fitted the item, it went into the fullest one {100 * fullest:.0f}% "
                f"of the time and into a new bin {100 * new_bin:.0f}% of the time; bins ended {100 * fill:.1f}% "
                "full on average.")
    return Outcome(i, "archived", fitness=-excess, descriptors=[fullest, new_bin], metrics=metrics,
                   feedback=feedback, eval_seconds=metrics["seconds"], novelty=float(rng.uniform(0, 1)), cell=i)


def code_figures(tmp: Path, children: int, seed: int = 0) -> dict[str, Any]:
    task = load_task("binpack")
    rng = np.random.default_rng(seed)
    files: dict[int, dict[str, bytes]] = {0: {task.spec.code_file: BINPACK_AGENT}}
    parent_of: dict[int, int] = {}
    path = tmp / "code.db"
    with ArchiveDB(path) as db:
        db.create_run(name="scale", task="binpack", seed=seed, config={},
                      descriptor_schema={"names": ["fullest_share", "new_bin_share"]})
        db.propose([Proposal(0, None, "seed", 0)])
        db.record([Outcome(0, "mutated", files=files[0])])
        db.record([binpack_outcome(0, rng)])
        i = 1
        while i < children:
            parent = int(rng.integers(0, i))
            try:
                edits = int(rng.integers(1, 4))
                child = ast_mutate(files[parent], rng, code_file=task.spec.code_file, params={"edits": edits})
            except ValueError:
                continue
            files[i], parent_of[i] = child, parent
            db.propose([Proposal(i, parent, "ast", int(rng.integers(2**63)))])
            db.record([Outcome(i, "mutated", files=child)])  # a code child is stored the moment it is made
            with db.transaction():
                db.record([binpack_outcome(i, rng)])
                db.add_evaluations([Evaluation(i, stage="evaluate", seconds=1.1, exit_status=0)])
            i += 1
    per_child = stored_bytes(path) / children
    return {"code_children": children, "bytes_per_child_code": round(per_child, 1),
            "code_bytes_by_table": by_table(path, children), "children_per_day_100gb_code": int(GB100 / per_child),
            "code_blob_bytes": blob_sizes(files, parent_of, task.spec.code_file, path)}


def blob_sizes(files: dict[int, dict[str, bytes]], parent_of: dict[int, int], code_file: str,
               db: Path) -> dict[str, Any]:
    """Every distinct code file's bytes with zlib, with zstd, and with zstd against the parent's file; ``stored``:
    what the store's blobs hold (the smallest of raw, zlib and a delta of the parent's file, in chains of at most
    ``MAX_DELTA_DEPTH``), ``delta_blobs`` how many are deltas."""
    seen: dict[bytes, int] = {}
    for i in sorted(files):
        seen.setdefault(files[i][code_file], i)
    raw = sum(len(b) for b in seen)
    out: dict[str, Any] = {"distinct_blobs": len(seen), "raw": raw,
                           "zlib_6": sum(min(len(b), len(zlib.compress(b, 6))) for b in seen)}
    for level in (3, 19):
        c = zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False)
        out[f"zstd_{level}"] = sum(min(len(b), len(c.compress(b))) for b in seen)
    delta = 0
    for blob, i in seen.items():  # the parent's file as a raw dictionary: what a delta chain would store
        parent = files[parent_of[i]][code_file] if i in parent_of else b""
        if not parent:
            delta += len(zlib.compress(blob, 6))
            continue
        d = zstandard.ZstdCompressionDict(parent, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        c = zstandard.ZstdCompressor(level=19, dict_data=d, write_content_size=False, write_checksum=False,
                                     write_dict_id=False)
        delta += min(len(blob), len(c.compress(blob)))
    out["zstd_19_parent_dictionary"] = delta
    with sqlite3.connect(db) as con:
        out["stored"], out["delta_blobs"] = con.execute(
            "SELECT SUM(length(content)), SUM(base IS NOT NULL) FROM blobs").fetchone()
    return out


INSPECT_COMMANDS = ("status", "top", "show", "lineage", "diff")


def synthetic_campaign(path: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """A finished ``n``-agent maze-like campaign written straight into SQLite (no engine, no archive state: for
    the inspection commands only). The shape of bench/inspect_bench.py's database: parents mostly from the
    last 64 children (2% from anywhere), 45% archived in a 32 x 32 grid, 50% rejected, 5% failed; every agent
    references one of 256 stored 142-weight genomes. Indexes are dropped for the bulk insert and rebuilt."""
    from inspect_bench import BINS, WINDOW

    from openended.config import load_config
    from openended.mutation.gaussian import dump_params

    rng = np.random.default_rng(seed)
    edges = np.linspace(0.0, 1.0, BINS + 1)
    schema = {"kind": "grid", "space": {"names": ["x", "y"], "lower": [0.0, 0.0], "upper": [1.0, 1.0],
                                        "bins": [BINS, BINS]},
              "fitness_offset": -300.0, "k": 15, "edges": [edges.tolist(), edges.tolist()]}
    config = load_config(None, {"task": "maze-medium", "db": str(path), "archive.kind": "grid",
                                "budget.max_children": n, "seed": seed}).model_dump(mode="json")
    started = time.monotonic()
    with ArchiveDB(path) as db:
        db.create_run(name="bench-scale", task="maze-medium", seed=seed, config=config, descriptor_schema=schema)
        genomes = [db.put_genome({"weights.npy": dump_params(rng.standard_normal(142))}) for _ in range(256)]
        db.update_run(status="finished", state={"elapsed_seconds": 0.0})
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                          "AND tbl_name IN ('agents', 'elites')").fetchall()
    for name, _ in indexes:
        con.execute(f"DROP INDEX {name}")
    depth = np.zeros(n, dtype=np.int64)
    elites: dict[int, int] = {}
    chunk = 100_000
    for start in range(0, n, chunk):
        ids = np.arange(start, min(n, start + chunk))
        recent = np.maximum(ids - 1 - rng.integers(0, WINDOW, size=len(ids)), 0)
        anywhere = (rng.random(len(ids)) * np.maximum(ids, 1)).astype(np.int64)
        parents = np.where(rng.random(len(ids)) < 0.98, recent, anywhere)
        desc, u = rng.random((len(ids), 2)), rng.random(len(ids))
        fitness = -300.0 + 250.0 * ids / n + rng.normal(0.0, 15.0, size=len(ids))
        cells = (np.searchsorted(edges[1:-1], desc[:, 0], side="right") * BINS
                 + np.searchsorted(edges[1:-1], desc[:, 1], side="right"))
        gh = rng.integers(0, len(genomes), size=len(ids))
        rows = []
        for j, i in enumerate(ids.tolist()):
            parent = None if i == 0 else int(parents[j])
            depth[i] = 0 if parent is None else depth[parent] + 1
            f, x, y, t = float(fitness[j]), float(desc[j, 0]), float(desc[j, 1]), 1.7e9 + i * 1e-3
            if u[j] < 0.05:
                rows.append((i, parent, int(depth[i]), "failed", "sandbox", "worker died", "gaussian", i,
                             genomes[gh[j]], None, None, None, None, None, None, None, None, t, t, None, t, i + 1))
                continue
            archived = u[j] < 0.5
            cell = int(cells[j]) if archived else None
            if archived:
                elites[int(cells[j])] = i
            rows.append((i, parent, int(depth[i]), "archived" if archived else "rejected", None, None, "gaussian",
                         i, genomes[gh[j]], f, f"[{x!r},{y!r}]", float(u[j]), cell,
                         "improved" if archived else None, '{"solved":0.0}', f"ended at ({x:.2f}, {y:.2f})", 0.01,
                         t, t, t, t, i + 1))
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO agents(id, parent_id, depth, status, fail_stage, fail_reason, operator, seed, genome_hash, "
            "fitness, descriptors, novelty, cell, archive_event, metrics, feedback, eval_seconds, created_at, "
            "mutated_at, evaluated_at, finished_at, finish_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    con.execute("BEGIN")
    con.executemany("INSERT INTO elites(cell, agent_id) VALUES (?, ?)", list(elites.items()))
    con.execute("COMMIT")
    for _, sql in indexes:
        con.execute(sql)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    deepest = con.execute("SELECT id, depth FROM agents WHERE status IN ('archived', 'rejected') "
                          "ORDER BY depth DESC, id LIMIT 1").fetchone()
    con.close()
    return {"build_seconds": round(time.monotonic() - started, 1), "deepest_agent": deepest[0],
            "deepest_depth": deepest[1], "db_bytes": path.stat().st_size}


def command_seconds(db: Path, agent: int, repeats: int) -> dict[str, float]:
    """Median seconds of each inspection command through the CLI in-process (--json form)."""
    import statistics

    from typer.testing import CliRunner

    from openended.cli import app

    args = {"status": ["status", str(db)], "top": ["top", str(db), "-k", "10"], "show": ["show", str(db), str(agent)],
            "lineage": ["lineage", str(db), str(agent)], "diff": ["diff", str(db), str(agent)]}
    runner = CliRunner()
    out: dict[str, float] = {}
    for cmd in INSPECT_COMMANDS:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = runner.invoke(app, [*args[cmd], "--json"])
            times.append(time.perf_counter() - t0)
            if result.exit_code != 0:
                raise RuntimeError(f"{cmd} failed: {result.output[-500:]}")
        out[cmd] = round(statistics.median(times), 3)
    return out


def inspection_figures(tmp: Path, n: int, key_n: int, repeats: int) -> dict[str, Any]:
    facts = synthetic_campaign(tmp / "synthetic.db", n)
    seconds = command_seconds(tmp / "synthetic.db", facts["deepest_agent"], repeats)
    return {f"max_command_seconds_at_{key_n}": max(seconds.values()), "inspection_agents": n,
            "inspection_command_seconds": seconds, "inspection_db": facts}


def resume_figures(n: int, key_n: int, children: int, members: int, tmp: str, keep: str | None) -> dict[str, Any]:
    from scale_resume import figures

    r = figures(n, children, members, tmp=tmp, keep=keep)
    return {f"resume_seconds_at_{key_n}": r["resume_seconds"],
            f"noop_children_per_s_at_{key_n}": r["noop_children_per_s"],
            f"driver_rss_mb_at_{key_n}": r["driver_rss_mb"],
            "archive_bytes_per_member": r["archive_bytes_per_member"], "resume": r}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bytes per child, params and code (issue 18)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs (CI)")
    parser.add_argument("--maze-children", type=int, default=5000)
    parser.add_argument("--code-children", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=10_000_000, help="the synthetic database's agents")
    parser.add_argument("--resume-children", type=int, default=5000, help="children the resumed loop runs")
    parser.add_argument("--members", type=int, default=1_000_000, help="the archive measured per member")
    parser.add_argument("--keep", help="the resume figures' database: built here once and kept (resumed again)")
    parser.add_argument("--only", choices=("bytes", "inspection", "resume"), help="one part of the figures")
    parser.add_argument("--tmp", help="folder for the databases (default: a temporary one; 10^7 agents ~ 5 GB)")
    args = parser.parse_args(argv)
    maze_n, code_n, agents = (300, 200, 2000) if args.smoke else (args.maze_children, args.code_children, args.agents)
    resume_children, members = (300, 10_000) if args.smoke else (args.resume_children, args.members)
    result: dict[str, Any] = {"smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="openended-scale-", dir=args.tmp) as tmp:
        if args.only in (None, "bytes"):
            result.update(params_figures(Path(tmp), maze_n))
            result.update(code_figures(Path(tmp), code_n))
        if args.only in (None, "inspection"):
            result.update(inspection_figures(Path(tmp), agents, args.agents, 1 if args.smoke else 3))
        if args.only in (None, "resume"):
            result.update(resume_figures(agents, args.agents, resume_children, members, tmp, args.keep))
    text = json.dumps(result, indent=2)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
