"""Storage at scale: bytes a campaign stores per child, for a parameter task and for a code task.

    python bench/scale.py --out scale.json            # a real 5,000-child maze campaign (twice), 2,000 code children
    python bench/scale.py --smoke --out scale.json    # CI: 300 maze children (twice), 200 code children (seconds)

Writes:

- ``bytes_per_child_params``: a real maze campaign (``maze-medium``, seed 0, the default novelty search and
  sandbox) through the engine: the database file after a checkpoint, divided by its children. Target <= 400.
  ``bytes_per_child_params_uncompacted``: the same campaign with every genome stored in full
  (``ArchiveDB.materialise_every = 1``, what the store did before recipes); ``params_bytes_by_table``: where
  the compact one's bytes go, per child (SQLite's dbstat).
- ``bytes_per_child_code``: binpack-sized code children (the ``ast`` operator on a 0.9 KB binpack agent, each
  from a random earlier child, recorded as a code campaign records them: mutated, then evaluated with binpack's
  metrics and feedback and one evaluation row). ``code_blob_bytes``: all distinct code blobs as stored
  (zlib 6, the store's) beside zstd 3 and 19 (the ``zstandard`` package, when installed) and zstd 19 with
  the parent's file as a dictionary: whether zstd pays for code genomes.
- ``children_per_day_100gb_*``: how many children 100 GB holds, per task.
- ``noop_children_per_s_at_10000000``, ``resume_seconds_at_10000000``, ``max_command_seconds_at_10000000``,
  ``driver_rss_mb_at_10000000``, ``maze_engine_share_of_simulator``: issue 18's other figures, ``null``
  until measured (listed in ``not_measured``).
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

from archive_db import ArchiveDB, Evaluation, Outcome, Proposal
from openended.mutation.ast_edit import ast_mutate
from openended.tasks import load_task

NOT_MEASURED = ("noop_children_per_s_at_10000000", "resume_seconds_at_10000000", "max_command_seconds_at_10000000",
                "driver_rss_mb_at_10000000", "maze_engine_share_of_simulator")
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


def maze_campaign(db: Path, children: int, ray_address: str, every: int) -> int:
    """Run a real maze campaign of ``children`` with the store materialising every ``every`` hops; its children."""
    from openended.config import load_config
    from openended.engine import Campaign

    ArchiveDB.materialise_every = every
    overrides = {"task": "maze-medium", "db": str(db), "seed": 0, "budget.max_children": children,
                 "budget.stop_at_target": False, "ray_address": ray_address, "stats_every_seconds": 60.0}
    summary = Campaign(load_config(None, overrides)).run()
    if summary.status != "finished":
        raise RuntimeError(f"the maze campaign did not finish: {summary}")
    with ArchiveDB(db, readonly=True) as store:
        return store.next_agent_id()


def params_figures(tmp: Path, children: int) -> dict[str, Any]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    default_every = ArchiveDB.materialise_every
    try:
        started = time.monotonic()
        n = maze_campaign(tmp / "maze.db", children, address, default_every)
        seconds = time.monotonic() - started
        full = maze_campaign(tmp / "maze-full.db", children, address, 1)
    finally:
        ArchiveDB.materialise_every = default_every
        ray.shutdown()
    compact_bytes, full_bytes = stored_bytes(tmp / "maze.db"), stored_bytes(tmp / "maze-full.db")
    with ArchiveDB(tmp / "maze.db", readonly=True) as store:
        recipes = store.conn.execute("SELECT COUNT(*) FROM recipes").fetchone()[0]
    per_child = compact_bytes / n
    return {
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
            "code_blob_bytes": blob_sizes(files, parent_of, task.spec.code_file)}


def blob_sizes(files: dict[int, dict[str, bytes]], parent_of: dict[int, int], code_file: str) -> dict[str, Any]:
    """Every distinct code file's bytes stored with zlib (the store's choice today) and with zstd."""
    seen: dict[bytes, int] = {}
    for i in sorted(files):
        seen.setdefault(files[i][code_file], i)
    raw = sum(len(b) for b in seen)
    out: dict[str, Any] = {"distinct_blobs": len(seen), "raw": raw,
                           "zlib_6": sum(min(len(b), len(zlib.compress(b, 6))) for b in seen)}
    try:
        import zstandard
    except ImportError:
        out["zstd"] = "zstandard not installed"
        return out
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
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bytes per child, params and code (issue 18)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs (CI)")
    parser.add_argument("--maze-children", type=int, default=5000)
    parser.add_argument("--code-children", type=int, default=2000)
    args = parser.parse_args(argv)
    maze_n, code_n = (300, 200) if args.smoke else (args.maze_children, args.code_children)
    result: dict[str, Any] = {"smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="openended-scale-") as tmp:
        result.update(params_figures(Path(tmp), maze_n))
        result.update(code_figures(Path(tmp), code_n))
    result.update(dict.fromkeys(NOT_MEASURED))
    result["not_measured"] = list(NOT_MEASURED)
    text = json.dumps(result, indent=2)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
