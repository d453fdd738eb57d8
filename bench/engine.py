"""Campaign engine benchmark: the real loop, store and Ray with a no-op mutator and evaluator.

    python bench/engine.py --out engine.json
    python bench/engine.py --smoke --out engine.json    # CI: archives of 200 and 2,000, 200 children (seconds)

Writes noop_children_per_s_at_1000 and noop_children_per_s_at_100000 (children per second through
the loop with the archive pre-filled to that size, in the free steady-state mode),
deterministic_children_per_s_at_1000 (the same in the reproducible mode, the default: outcomes
applied in child order, proposals in blocks; its share of the free figure is
deterministic_share_at_1000) and resume_seconds_at_100000 (open a
100,000-agent campaign until its first batch of children is back from Ray: the first progress
update; Ray already running, its workers warm).
Targets: >= 300 children/s at both sizes; the reproducible mode at least half the free one; <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from archive_db import Outcome, Proposal
from openended.config import load_config
from openended.engine import Campaign

NOOP = str(Path(__file__).resolve().parent / "tasks" / "noop")


def _config(db: Path, budget: int, deterministic: bool = False):
    return load_config(None, {"deterministic": deterministic,
                              "task": NOOP, "db": str(db), "budget.max_children": budget, "archive.kind": "all",
                              "selection.strategy": "curiosity", "mutation.operator": "noop", "batch_size": 64,
                              "max_in_flight": 4, "stats_every_seconds": 5.0,
                              # the loop, the store and Ray are measured here; bench/sandbox.py measures sandboxes
                              "sandbox.kind": "inprocess"})


def prefill(db: Path, n: int, seed: int = 0, deterministic: bool = False) -> None:
    """A campaign database holding n evaluated agents, all in the archive (a random tree)."""
    campaign = Campaign(_config(db, n, deterministic))
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
    # the driver state a resume reads: the archive filled above, the generator as it is
    store.update_run(state={**campaign.state, "rng": campaign.rng.bit_generator.state, "archive": archive.state()})
    campaign.close()


def children_per_s(size: int, children: int, workdir: Path, deterministic: bool = False) -> float:
    db = workdir / f"prefilled-{size}-{deterministic}.db"
    prefill(db, size, deterministic=deterministic)
    campaign = Campaign(_config(db, size + children, deterministic))
    summary = campaign.run()
    assert summary.children_done == size + children, summary
    return children / summary.seconds


class _FirstUpdate:
    """A progress display that notes when the campaign's first update comes (its first batch is
    back) and then asks the campaign to stop, as Ctrl-C does."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.children_done = 0

    def note(self, message: str) -> None:
        pass

    def update(self, standing) -> None:
        if self.at is None:
            self.at = time.perf_counter()
            self.children_done = standing.children_done
            os.kill(os.getpid(), signal.SIGINT)


def resume_seconds(size: int, workdir: Path) -> float:
    db = workdir / f"prefilled-{size}.db"
    if not db.exists():
        prefill(db, size)
    first = _FirstUpdate()
    started = time.perf_counter()
    Campaign(_config(db, size * 2), progress=first).run()
    assert first.at is not None and first.children_done >= size, "the resumed campaign reported its progress"
    return first.at - started


def main() -> None:
    parser = argparse.ArgumentParser(description="campaign engine benchmark")
    parser.add_argument("--out", required=True)
    parser.add_argument("--children", type=int, default=20_000, help="children timed at each archive size")
    parser.add_argument("--smoke", action="store_true",
                        help="archives of 200 and 2,000 agents, 200 children: checks the script; same keys")
    args = parser.parse_args()
    small, large = 1000, 100_000
    if args.smoke:
        small, large, args.children = 200, 2000, 200
    import ray

    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        result = {
            "noop_children_per_s_at_1000": children_per_s(small, args.children, workdir),
            "deterministic_children_per_s_at_1000": children_per_s(small, args.children, workdir, True),
            "noop_children_per_s_at_100000": children_per_s(large, args.children, workdir),
        }
        result["deterministic_share_at_1000"] = (result["deterministic_children_per_s_at_1000"]
                                                 / result["noop_children_per_s_at_1000"])
        (workdir / "resume").mkdir()
        result["resume_seconds_at_100000"] = resume_seconds(large, workdir / "resume")
        result["children_timed"] = args.children
        result["archive_sizes"] = [small, large]
        result["smoke"] = args.smoke
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
