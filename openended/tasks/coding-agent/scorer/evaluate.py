"""The coding-agent task's scorer: each problem's solution.py (as the acting side handed it on) against
the problem's hidden test (tests.jsonl beside this file, which no agent's stage sees). A solution runs
in a process of its own (sandboxes.agent), as any agent code does: it may fail or hang, not score itself.

Fitness: the share of the stage's problems solved. Descriptors: mean model tokens and mean model calls
per problem, as the gateway counted them (acting.json). Feedback: which problems failed, and why.
"""

import json
import os

from sandboxes.agent import AgentError, run_agent

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_TOKENS = 4000.0  # the descriptors' upper bounds (task.toml), where values are clipped
MAX_CALLS = 10.0


def tests(count):
    with open(os.path.join(HERE, "tests.jsonl"), encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[:count]


def passes(solution, test, timeout_s):
    """(solved?, why not)."""
    files = {"solution.py": solution.encode("utf-8"), "hidden_test.py": test.encode("utf-8")}
    try:
        with run_agent(files, "hidden_test.py", timeout_s=timeout_s) as run:
            verdict = run.call("verify")
    except AgentError as exc:
        return False, str(exc).splitlines()[-1][:200] if str(exc) else type(exc).__name__
    return verdict is True, "" if verdict is True else "verify() did not return True"


def clip(value, upper):
    return min(max(float(value), 0.0), upper)


def evaluate_batch(genomes, args):
    chosen = tests(int(args.get("problems", 10)))
    timeout_s = float(args.get("test_timeout_s", 10))
    results = []
    for outputs in genomes:
        try:
            runs = {r["id"]: r for r in json.loads(outputs.get("acting.json", b"{}")).get("problems", [])}
        except (ValueError, AttributeError, TypeError, KeyError):
            runs = {}
        solved, failures = 0, []
        for test in chosen:
            solution = outputs.get(f"{test['id']}/solution.py")
            if solution is None:
                failures.append(f"{test['id']}: no solution.py")
                continue
            ok, why = passes(solution.decode("utf-8", "replace"), test["test"], timeout_s)
            solved += ok
            if not ok:
                failures.append(f"{test['id']}: {why}")
        count = max(1, len(chosen))
        tokens = sum(float(runs.get(t["id"], {}).get("tokens", 0) or 0) for t in chosen) / count
        calls = sum(float(runs.get(t["id"], {}).get("calls", 0) or 0) for t in chosen) / count
        results.append({
            "fitness": solved / count,
            "descriptors": [clip(tokens, MAX_TOKENS), clip(calls, MAX_CALLS)],
            "metrics": {"solved": solved, "problems": len(chosen), "tokens_per_problem": tokens,
                        "calls_per_problem": calls, "failed": [f.split(":")[0] for f in failures]},
            "feedback": f"solved {solved} of {len(chosen)}" + ("; failed: " + "; ".join(failures) if failures else ""),
        })
    return results
