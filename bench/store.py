"""Lineage store and QD archive benchmark (issue: lineage store and quality-diversity archive).

    python bench/store.py --out store.json
    python bench/store.py --smoke --out store.json    # CI: 2,000 children, a 500-deep chain (seconds)

Writes insert_children_per_s (100,000 children: proposed, then archived with a ~1.2 KB unique
genome, batches of 1,000), ancestors_depth_10000_ms (median wall clock, a 10,000-deep chain; beside it
ancestors_depth_10000_cpu_ms, the calling thread's CPU time, less moved by other load) and
archive_ms_per_child_at_100000 (archive add with its novelty + one parent sample, per child, with
100,000 agents in a 2-D novelty archive, the campaign's default selection strategy).
Targets: >= 5,000 children/s; <= 20 ms; <= 1 ms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

# bench/ is the first entry of sys.path when this file runs as a script
from archive_bench import measure_archive_ms_per_child
from store_db import ancestors_timings, measure_insert

from openended.config import CampaignConfig


def main() -> None:
    parser = argparse.ArgumentParser(description="lineage store and QD archive benchmark")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run (2,000 children, a 500-deep chain) that checks the script; same keys")
    args = parser.parse_args()
    depth, children = 10_000, 8000
    if args.smoke:
        args.n, depth, children = 2000, 500, 200
    selection = CampaignConfig().selection.strategy
    with tempfile.TemporaryDirectory() as tmp:
        insert = measure_insert(Path(tmp) / "insert.db", n=args.n, batch=1000)
        wall_ms, cpu_ms = ancestors_timings(Path(tmp) / "chain.db", depth=depth)
        result = {
            "insert_children_per_s": insert,
            "ancestors_depth_10000_ms": wall_ms,
            "ancestors_depth_10000_cpu_ms": cpu_ms,
            "archive_ms_per_child_at_100000": measure_archive_ms_per_child(
                n=args.n, kind="novelty", selection=selection, children=children),
            "archive_selection": selection,
            "n": args.n,
            "smoke": args.smoke,
        }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
