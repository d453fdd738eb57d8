"""MAP-Elites with cheap evaluations: the planar-arm repertoire (built-in task ``arm``) through the
engine against pyribs at equal evaluations.

    python bench/qd.py --out qd.json                                  # 5 seeds, 20,000 evaluations each
    python bench/qd.py --out qd.json --selection uniform --staleness default 32 64 128 256
                                                                      # pyribs' own algorithm; staleness's cost
    python bench/qd.py --smoke --out qd.json                          # CI: 1 seed, 640 evaluations

The domain is pyribs' arm-repertoire tutorial's: 12 joint angles (clipped to [-pi, pi]), descriptors
the end effector's (x, y) on a 100 x 100 grid over [-12, 12]^2, fitness minus the variance of the
angles. Both sides run MAP-Elites from the straight arm with Gaussian noise (sigma 0.1) on every
angle. The engine: ``grid`` archive, the engine's default parent selection (``novelty``: weight
novelty ** 3 among the 250 most recent elites) unless ``--selection`` names another (``uniform`` is
pyribs' own rule: a parent drawn uniformly from the elites), reproducible mode (``deterministic =
true``) with the given staleness ("default": the engine's own); pyribs: ``GridArchive`` +
``GaussianEmitter`` asked and told in batches of 32 (its staleness is 32). Both QD scores are
measured the same way (sum over occupied cells of fitness + 10).

Per staleness it writes each seed's ``engine_qd_score``, ``pyribs_qd_score`` and
``qd_score_ratio_vs_pyribs``, and their means; the top-level ``qd_score_ratio_vs_pyribs`` is the
first staleness given (the engine's default unless told otherwise).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from openended.config import CampaignConfig, load_config
from openended.engine import Campaign
from openended.qd import DescriptorSpace
from openended.sandbox.inprocess import load_evaluator
from openended.tasks import load_task

TASK = "arm"
PYRIBS_BATCH = 32


def schedule(staleness: int | None) -> dict:
    """Config overrides for the reproducible mode with ``staleness`` (None: the engine's default).

    Before the engine had ``deterministic``, only one Ray task in flight was reproducible: that is
    what an older engine gets (its staleness is then the batch size)."""
    if "deterministic" in CampaignConfig.model_fields:
        return {"deterministic": True, "staleness": staleness, "batch_size": 32, "max_in_flight": 4}
    return {"max_in_flight": 1, "batch_size": staleness or 64}


def run_engine(seed: int, budget: int, staleness: int | None, workdir: Path, selection: str | None = None) -> dict:
    """One engine campaign; ``selection`` None keeps the engine's default parent selection."""
    db = workdir / f"arm-{seed}-{staleness}-{selection}.db"
    cfg = load_config(None, {
        "sandbox.kind": "inprocess",  # the search is measured here, not the sandbox
        "task": TASK, "db": str(db), "seed": seed, "budget.max_children": budget,
        "archive.kind": "grid", "selection.strategy": selection, "mutation.operator": "gaussian",
        "stats_every_seconds": 30.0, **schedule(staleness),
    })
    summary = Campaign(cfg).run()
    return {"qd_score": summary.qd_score, "coverage": summary.coverage, "seconds": summary.seconds,
            "evaluations": summary.children_done + summary.children_failed}


def run_pyribs(seed: int, budget: int) -> dict:
    from ribs.archives import GridArchive
    from ribs.emitters import GaussianEmitter
    from ribs.schedulers import Scheduler

    task = load_task(TASK)
    space = DescriptorSpace.from_dict(task.descriptor_space)
    evaluate = load_evaluator(str(task.root))
    x0 = np.load(io.BytesIO(task.seed_files()[task.spec.params_file]))
    sigma = float(task.operator_params("gaussian")["sigma"])
    ranges = list(zip(space.lower, space.upper, strict=True))
    archive = GridArchive(solution_dim=len(x0), dims=list(space.bins), ranges=ranges, seed=seed)
    emitter = GaussianEmitter(archive, sigma=sigma, x0=x0, batch_size=PYRIBS_BATCH, seed=seed)
    scheduler = Scheduler(archive, [emitter])
    evals = 0
    started = time.perf_counter()
    while evals < budget:
        sols = scheduler.ask()[: budget - evals]
        genomes = []
        for s in sols:
            buf = io.BytesIO()
            np.save(buf, np.asarray(s, dtype=np.float64))
            genomes.append({task.spec.params_file: buf.getvalue()})
        results = evaluate(genomes, task.evaluate_args)
        objective = np.array([r["fitness"] for r in results])
        measures = np.array([r["descriptors"] for r in results])
        evals += len(sols)
        if len(sols) < PYRIBS_BATCH:  # the last, partial batch: straight into the archive
            archive.add(sols, objective, measures)
        else:
            scheduler.tell(objective, measures)
    elites = np.asarray(archive.data("objective"), dtype=np.float64)
    qd = float(np.sum(elites - task.fitness_lower))
    return {"qd_score": qd, "coverage": len(elites) / float(np.prod(space.bins)),
            "seconds": time.perf_counter() - started, "evaluations": evals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=20_000, help="evaluations per run, both sides")
    parser.add_argument("--staleness", nargs="+", default=["default"],
                        help="the engine's staleness settings to measure ('default' or an integer)")
    parser.add_argument("--selection", default="default",
                        help="the engine's parent selection ('default': the engine's own; 'uniform': pyribs' rule)")
    parser.add_argument("--smoke", action="store_true", help="one seed, 640 evaluations: checks the script; same keys")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.budget = 1, 640
    settings = [None if s == "default" else int(s) for s in args.staleness]
    selection = None if args.selection == "default" else args.selection

    import ray

    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    report: dict = {"task": TASK, "budget": args.budget, "seeds": args.seeds, "smoke": args.smoke,
                    "selection": args.selection,
                    "pyribs_batch": PYRIBS_BATCH, "by_staleness": {}}
    pyribs = []
    for seed in range(args.seeds):
        pyribs.append(run_pyribs(seed, args.budget))
        print(f"pyribs seed {seed}: {pyribs[-1]}", flush=True)
    report["pyribs_qd_score"] = [r["qd_score"] for r in pyribs]
    report["pyribs_mean_qd_score"] = statistics.fmean(report["pyribs_qd_score"])
    report["pyribs_mean_coverage"] = statistics.fmean(r["coverage"] for r in pyribs)
    with tempfile.TemporaryDirectory() as tmp:
        for staleness in settings:
            runs = []
            for seed in range(args.seeds):
                runs.append(run_engine(seed, args.budget, staleness, Path(tmp), selection))
                print(f"engine staleness {staleness or 'default'} seed {seed}: {runs[-1]}", flush=True)
            ratios = [r["qd_score"] / p["qd_score"] for r, p in zip(runs, pyribs, strict=True)]
            report["by_staleness"][str(staleness or "default")] = {
                "engine_qd_score": [r["qd_score"] for r in runs],
                "engine_mean_coverage": statistics.fmean(r["coverage"] for r in runs),
                "engine_mean_seconds": statistics.fmean(r["seconds"] for r in runs),
                "qd_score_ratio_vs_pyribs": ratios,
                "mean_qd_score_ratio_vs_pyribs": statistics.fmean(ratios),
                "min_qd_score_ratio_vs_pyribs": min(ratios),
            }
            Path(args.out).write_text(json.dumps(report, indent=2))
    first = report["by_staleness"][str(settings[0] or "default")]
    report["staleness"] = str(settings[0] or "default")
    report["qd_score_ratio_vs_pyribs"] = first["qd_score_ratio_vs_pyribs"]
    report["mean_qd_score_ratio_vs_pyribs"] = first["mean_qd_score_ratio_vs_pyribs"]
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
