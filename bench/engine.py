"""Campaign engine benchmark: the real loop, store and Ray with a no-op mutator and evaluator.

    python bench/engine.py --out engine.json

Writes noop_children_per_s_at_1000 and noop_children_per_s_at_100000 (children per second through
the loop with the archive pre-filled to that size) and resume_seconds_at_100000 (open a
100,000-agent campaign until its first child is dispatched; Ray already running).
Targets: >= 300 children/s at both sizes; <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archive_db import Outcome, Proposal  # noqa: E402
from openended.engine import Campaign  # noqa: E402
from openended.config import load_config  # noqa: E402

NOOP = str(Path(__file__).resolve().parent / "tasks" / "noop")


def _config(db: Path, budget: int):
    return load_config(None, {"task": NOOP, "db": str(db), "budget.max_children": budget, "archive.kind": "all",
                              "selection.strategy": "curiosity", "mutation.operator": "noop", "batch_size": 64,
                              "max_in_flight": 4, "stats_every_seconds": 5.0,
                              # the loop, the store and Ray are measured here; bench/sandbox.py measures sandboxes
                              "sandbox.kind": "inprocess"})


def prefill(db: Path, n: int, seed: int = 0) -> None:
    """A campaign database holding n evaluated agents, all in the archive (a random tree)."""
    campaign = Campaign(_config(db, n))
    rng = np.random.default_rng(seed)
    genome = campaign.task.seed_files()
    archive, store = campaign.archive, campaign.db
    for start in range(0, n, 2000):
        ids = range(start, min(n, start + 2000))
        proposals = [Proposal(i, None if i == 0 else int(rng.integers(0, i)), "noop" if i else "seed", i) for i in ids]
        outcomes, elites = [], {}
        for p in proposals:
            x = rng.uniform(-1, 1, size=2)
            added = archive.add(p.id, float(-np.hypot(*x)), x)
            outcomes.append(Outcome(p.id, "archived", files=genome, fitness=float(-np.hypot(*x)),
                                    descriptors=x.tolist(), novelty=added.novelty, cell=added.cell,
                                    archive_event=added.status))
            elites[added.cell] = p.id
        with store.transaction():
            store.propose(proposals)
            store.record(outcomes)
            store.set_elites(elites)
    campaign.next_id = n
    with store.transaction():
        campaign._save_state()
    store.close()


def children_per_s(size: int, children: int, workdir: Path) -> float:
    db = workdir / f"prefilled-{size}.db"
    prefill(db, size)
    campaign = Campaign(_config(db, size + children))
    summary = campaign.run()
    assert summary.children_done == size + children, summary
    return children / summary.seconds


def resume_seconds(size: int, workdir: Path) -> float:
    db = workdir / f"prefilled-{size}.db"
    if not db.exists():
        prefill(db, size)
    started = time.perf_counter()
    campaign = Campaign(_config(db, size * 2))
    campaign._fill()  # up to the first dispatched Ray task
    elapsed = time.perf_counter() - started
    assert campaign._inflight
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="campaign engine benchmark")
    parser.add_argument("--out", required=True)
    parser.add_argument("--children", type=int, default=20_000, help="children timed at each archive size")
    args = parser.parse_args()
    import ray

    ray.init(include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = {
            "noop_children_per_s_at_1000": children_per_s(1000, args.children, tmp),
            "noop_children_per_s_at_100000": children_per_s(100_000, args.children, tmp),
        }
        (tmp / "resume").mkdir()
        result["resume_seconds_at_100000"] = resume_seconds(100_000, tmp / "resume")
        result["children_timed"] = args.children
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
