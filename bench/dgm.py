"""The Darwin Gödel Machine's comparisons on the coding-agent task, with a scripted model, in Docker:
the full system (``--dgm full``), ``no_selfimprove`` (the seed agent makes every change), ``no_darwin``
(always extend the latest agent) and ``clade`` (Huxley–Gödel Machine parent choice), each a campaign of
the same budget and seed through the CLI.

    python bench/dgm.py --out dgm.json [--budget 16] [--seeds 2] [--variant small]
    python bench/dgm.py --smoke --out dgm.json    # CI: 4 children per configuration, one seed, variant tiny

The scripted model (a real local HTTP server, deterministic) makes self-improvement pay, and makes it
compound, as the DGM's premise says:

- an agent solves a third of the problems (those at positions 0 and 1 modulo 6); each of four capability
  lines in its prompt solves another sixth, so four successive self-improvements reach 1.0; "Answer
  fast." solves none;
- the diagnosis proposes a capability the parent lacks, or "Answer fast.", chosen by the child's seed;
- an editor agent that has a capability carries out the change; one without (the seed) does so only
  for half the statements (by their hash) and otherwise stops without editing (the child fails at
  mutation: "changed nothing"). So with ``no_selfimprove`` the editor never gets better.

Writes, per configuration and overall: ``children_per_hour`` (children finished per hour of wall time,
the scripted model answering at once, so this is the system's own cost: sandboxes, stages, store),
``container_leaks`` (containers left with the campaign's label; target 0), ``tokens_per_child`` (model
tokens in + out per self_improve child, the diagnosis and the self-edit and its evaluations),
``share_skipped_by_stages`` (of the children evaluated, the share that never reached the full stage),
and ``best`` (the best full-stage fitness) per configuration: ``best_by_configuration``, with the id of the
first child that reached it (``children_to_best_by_configuration``). Campaigns do not stop at the task's
target, so every configuration spends the same budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "llm"))

from llm_fault_server import FaultServer, ok, respond  # noqa: E402 - a real local OpenAI-compatible server

from openended.dgm import DGM_CONFIGURATIONS  # noqa: E402
from openended.sandbox import campaign_label  # noqa: E402
from openended.tasks.humaneval import read_package_data  # noqa: E402

CANONICAL = {row["entry_point"]: row for row in read_package_data()}
with open(ROOT / "openended" / "tasks" / "coding-agent" / "problems.jsonl", encoding="utf-8") as _fh:
    POSITION = {json.loads(line)["entry_point"]: i for i, line in enumerate(_fh) if line.strip()}
# Problem i is solved by an agent whose prompt holds the capabilities of classes i % 6: 0 and 1 need none.
CAPABILITIES = {"Think step by step.": 2, "Read the examples twice.": 3, "Test your code.": 4,
                "Handle the edge cases.": 5}
HASTY = "Answer fast."
SEED_PROMPT = "You are a careful Python programmer."


def _own_lines(prompt: str) -> str:
    """What the calling agent added to its own prompt: the lines before the seed's first line."""
    return prompt.split(SEED_PROMPT, 1)[0]


def _model(request):
    prompt = request.prompt
    if "Here is a coding agent." in prompt:  # the diagnosis: a capability the parent lacks, or a bad idea
        shown = prompt.split("--- prompt.txt ---\n", 1)[1].split("\n--- end of prompt.txt ---", 1)[0]
        options = [line for line in CAPABILITIES if line not in shown] + [HASTY]
        line = options[int((request.body or {}).get("seed", 0)) % len(options)]
        return ok(f"Add the line '{line}' at the top of prompt.txt.", usage=(300, 20))
    history = prompt.rsplit("Actions (reply with exactly one):", 1)[1]
    if "\nAction: " in history or history.startswith("Action: "):
        return ok("DONE", usage=(50, 1))
    own = _own_lines(prompt)
    if "Improve this coding agent" in prompt:  # the self-edit, by the parent (or by the seed agent)
        line = prompt.split("Add the line '", 1)[1].split("'", 1)[0]
        skilled = any(c in own for c in CAPABILITIES)
        if not skilled and zlib.crc32(line.encode() + prompt[-200:].encode()) % 2:
            return ok("DONE", usage=(200, 1))  # a careless editor stops without making the change
        shown = prompt.split("--- prompt.txt ---\n", 1)[1].split("\n--- end of prompt.txt ---", 1)[0]
        return ok(f"WRITE prompt.txt\n{line}\n{shown}\nEND_OF_FILE", usage=(200, 40))
    entry = prompt.split("Complete the function `", 1)[1].split("`", 1)[0]
    classes = set() if HASTY in own else {0, 1} | {k for c, k in CAPABILITIES.items() if c in own}
    row = CANONICAL[entry]
    body = row["canonical_solution"] if POSITION[entry] % 6 in classes else "    return None\n"
    return ok(f"WRITE solution.py\n{row['prompt']}{body}END_OF_FILE", usage=(100, 20))


def _campaign(folder: Path, name: str, seed: int, budget: int, base_url: str, variant: str) -> dict:
    db = folder / f"{name}-seed{seed}.db"
    config = folder / f"{name}-seed{seed}.toml"
    config.write_text("\n".join([
        f'task = "coding-agent-{variant}"', f'db = "{db}"', "max_in_flight = 1", f"seed = {seed}",
        "[sandbox]", 'kind = "docker"', 'mode = "pool"',
        "[mutation]", "params = { timeout_s = 60 }",
        "[llm]", f'models = [ {{ name = "scripted", base_url = "{base_url}", model = "fault-model", '
                 'api = "completion", max_retries = 0, timeout_s = 30.0, max_total_s = 30.0 } ]',
        "[budget]", f"max_children = {budget}", "stop_at_target = false",  # every configuration spends it all
    ]) + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "openended", "run", str(config), "--dgm", name, "--quiet"],
                          env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise SystemExit(f"dgm bench: the {name} campaign failed:\n{proc.stderr[-3000:]}")
    leaks = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=openended.campaign={campaign_label(db)}"],
                           capture_output=True, text=True, check=True).stdout.split()
    return {**_figures(db), "seconds": round(seconds, 2), "container_leaks": len(leaks)}


def _figures(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        finished = con.execute("SELECT COUNT(*) FROM agents WHERE status IN ('archived', 'rejected', 'failed')"
                               ).fetchone()[0]
        tokens = con.execute("SELECT COUNT(*), COALESCE(SUM(tokens_in + tokens_out), 0) FROM agents "
                             "WHERE operator = 'self_improve'").fetchone()
        stages = {}
        for agent_id, stage in con.execute("SELECT agent_id, stage FROM evaluations ORDER BY id"):
            stages.setdefault(agent_id, set()).add(stage)
        best = con.execute("SELECT MAX(fitness) FROM agents WHERE status = 'archived'").fetchone()[0]
        first_best = con.execute("SELECT MIN(id) FROM agents WHERE status = 'archived' AND fitness = ?",
                                 (best,)).fetchone()[0]
        failed = con.execute("SELECT COUNT(*) FROM agents WHERE status = 'failed'").fetchone()[0]
    finally:
        con.close()
    evaluated = len(stages)
    skipped = sum(1 for names in stages.values() if "full" not in names)
    return {"children": finished, "failed": failed, "best": best, "children_to_best": first_best,
            "tokens_per_child": round(tokens[1] / tokens[0], 1) if tokens[0] else None,
            "children_evaluated": evaluated, "skipped_by_stages": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=int, default=16, help="children per campaign, roots included")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--configurations", nargs="+", default=list(DGM_CONFIGURATIONS),
                        choices=list(DGM_CONFIGURATIONS))
    parser.add_argument("--variant", default="small", choices=["tiny", "small"],
                        help="the task's cascade: small 3/10/30 problems, tiny 1/2/3")
    parser.add_argument("--smoke", action="store_true", help="4 children per configuration, one seed, tiny (CI)")
    args = parser.parse_args()
    budget, seeds, variant = (4, 1, "tiny") if args.smoke else (args.budget, args.seeds, args.variant)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="openended-dgm-") as tmp, FaultServer(default=respond(_model)) as server:
        for name in args.configurations:
            for seed in range(seeds):
                run = _campaign(Path(tmp), name, seed, budget, server.base_url, variant)
                print(f"{name} seed {seed}: {json.dumps(run)}", flush=True)
                runs.setdefault(name, []).append(run)
    every = [run for group in runs.values() for run in group]
    children, seconds = sum(r["children"] for r in every), sum(r["seconds"] for r in every)
    evaluated, skipped = sum(r["children_evaluated"] for r in every), sum(r["skipped_by_stages"] for r in every)
    per_child = [r["tokens_per_child"] for r in every if r["tokens_per_child"] is not None]
    out = {
        "budget": budget, "seeds": seeds, "task": f"coding-agent-{variant}",
        "children_per_hour": round(children / seconds * 3600, 1),
        "container_leaks": sum(r["container_leaks"] for r in every),
        "tokens_per_child": round(sum(per_child) / len(per_child), 1) if per_child else None,
        "share_skipped_by_stages": round(skipped / evaluated, 3) if evaluated else None,
        "best_by_configuration": {name: max((r["best"] or 0.0) for r in group) for name, group in runs.items()},
        "mean_best_by_configuration": {name: round(sum((r["best"] or 0.0) for r in group) / len(group), 3)
                                       for name, group in runs.items()},
        "children_to_best_by_configuration": {
            name: [r["children_to_best"] for r in group] for name, group in runs.items()},
        "failed_share_by_configuration": {
            name: round(sum(r["failed"] for r in group) / sum(r["children"] for r in group), 3)
            for name, group in runs.items()},
        "runs": runs,
    }
    if args.smoke:
        out["smoke"] = True
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
