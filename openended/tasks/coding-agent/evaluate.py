"""The coding-agent task's acting side: runs the agent on each problem of the stage, in a workspace of
its own, and hands each resulting solution.py to the scorer (scorer/, with the hidden tests, which this
sandbox does not have). The agent runs in a process of its own (sandboxes.agent), one fresh process per
problem; the model gateway measures what each problem cost (sandboxes.model.usage).

Arguments (task.toml, per stage): ``problems`` (how many, from the start of problems.jsonl),
``problem_timeout_s`` (one agent run), ``log_chars`` (how much of each run's log goes into the feedback).

Outputs: ``<id>/solution.py`` per problem and ``acting.json`` (per problem: its id, the model calls and
tokens the gateway counted, the seconds, how the run ended), which the scorer reads for the descriptors.
"""

import json
import os
import time

from sandboxes.agent import AgentError, AgentTimeout, run_agent

HERE = os.path.dirname(os.path.abspath(__file__))
ENTRY = "agent.py"
MAX_SOLUTION_BYTES = 200_000


def problems(count):
    with open(os.path.join(HERE, "problems.jsonl"), encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[:count]


def spent():
    """(calls, tokens) through the gateway so far; zeros without it."""
    if not os.environ.get("OPENENDED_MODEL_SOCKET"):
        return 0, 0
    from sandboxes.model import usage

    now = usage()
    return int(now["calls"] or 0) + int(now["rejected"] or 0), int(now["tokens_in"] or 0) + int(now["tokens_out"] or 0)


def read_solution(workspace):
    """The agent's solution.py as text (not through a link it may have left there), or None."""
    try:
        fd = os.open(os.path.join(workspace, "solution.py"), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_SOLUTION_BYTES).decode("utf-8", "replace")


def act(files, problem, timeout_s):
    """Run the agent on one problem: (solution text or None, its log, how it ended)."""
    statement = (f"Complete the function `{problem['entry_point']}` in solution.py so that it does what its "
                 "docstring says. Keep its name and signature.")
    with run_agent(files, ENTRY, timeout_s=timeout_s) as agent:
        workspace = os.path.join(agent.folder, "workspace")
        os.mkdir(workspace)
        with open(os.path.join(workspace, "solution.py"), "w", encoding="utf-8") as fh:
            fh.write(problem["prompt"])
        try:
            log, ended = agent.call("solve", workspace, statement), "returned"
        except AgentTimeout:
            log, ended = "", "timed out"
        except AgentError as exc:
            log, ended = f"{exc}", "failed"
        return read_solution(workspace), log if isinstance(log, str) else repr(log)[:2000], ended


def evaluate_batch(genomes, args):
    chosen = problems(int(args.get("problems", 10)))
    timeout_s = float(args.get("problem_timeout_s", 120))
    log_chars = int(args.get("log_chars", 300))
    results = []
    for files in genomes:
        outputs, runs, notes = {}, [], []
        for problem in chosen:
            calls, tokens, began = *spent(), time.monotonic()
            try:
                solution, log, ended = act(files, problem, timeout_s)
            except AgentError as exc:  # it did not even load: a broken agent, invalid at once
                results.append({"valid": False, "feedback": f"the agent does not start: {exc}"})
                break
            calls_after, tokens_after = spent()
            runs.append({"id": problem["id"], "calls": calls_after - calls, "tokens": tokens_after - tokens,
                         "seconds": round(time.monotonic() - began, 3), "ended": ended})
            if solution is not None:
                outputs[f"{problem['id']}/solution.py"] = solution
            notes.append(f"[{problem['id']}] {ended}; log tail: {log[-log_chars:]}")
        else:
            outputs["acting.json"] = json.dumps({"problems": runs})
            ended = {}
            for run in runs:
                ended[run["ended"]] = ended.get(run["ended"], 0) + 1
            results.append({"outputs": outputs, "metrics": {"runs_ended": ended},
                            "feedback": "\n".join(notes)})
    return results
