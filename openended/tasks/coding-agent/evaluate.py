"""The coding-agent task's acting side: runs the agent on each problem of the stage, in a workspace of
its own, and hands each resulting solution.py to the scorer (scorer/, with the hidden tests, which this
sandbox does not have). The agent runs in a process of its own (sandboxes.agent), one fresh process per
problem; the model gateway measures what each problem cost (sandboxes.model.usage).

Arguments (task.toml, per stage): ``problems`` (how many, from the start of problems.jsonl),
``problem_timeout_s`` (one agent run), ``log_chars`` (how much of each run's log goes into the feedback).

Outputs: ``<id>/solution.py`` per problem and ``acting.json`` (per problem: its id, the model calls and
tokens the gateway counted, the seconds, how the run ended), which the scorer reads for the descriptors.

With ``self_edit`` in its arguments (the ``self_improve`` operator), it runs the agent once instead, on a
copy of its own files (or of ``edit_files``, when a fixed agent edits another) with that statement as its
problem, and returns the files it leaves as its outputs.
"""

import json
import os
import time

from sandboxes.agent import AgentError, AgentTimeout, run_agent

HERE = os.path.dirname(os.path.abspath(__file__))
ENTRY = "agent.py"
MAX_SOLUTION_BYTES = 200_000
MAX_AGENT_FILES = 200
MAX_AGENT_BYTES = 1_000_000


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
        log, ended = solve(agent, workspace, statement)
        return read_solution(workspace), log, ended


def solve(agent, workspace, statement):
    """One call of the agent's solve(): (its log as text, how the call ended)."""
    try:
        log, ended = agent.call("solve", workspace, statement), "returned"
    except AgentTimeout:
        log, ended = "", "timed out"
    except AgentError as exc:
        log, ended = f"{exc}", "failed"
    return log if isinstance(log, str) else repr(log)[:2000], ended


def read_tree(folder):
    """The regular UTF-8 files under ``folder`` (links and caches left out): ({relative path: text}, skipped)."""
    found, skipped, total = {}, [], 0
    for here, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(here, d)))
        for name in sorted(names):
            path = os.path.join(here, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if os.path.islink(path) or not os.path.isfile(path) or len(found) >= MAX_AGENT_FILES:
                skipped.append(rel)
                continue
            with open(path, "rb") as fh:
                data = fh.read(MAX_AGENT_BYTES + 1)
            total += len(data)
            try:
                if total > MAX_AGENT_BYTES:
                    raise ValueError("too large")
                found[rel] = data.decode("utf-8")
            except ValueError:
                skipped.append(rel)
    return found, skipped


def self_edit(files, statement, timeout_s, target=None):
    """The agent run on a writable copy of its own files (or of ``target``'s, {name: text}, when a fixed
    agent edits another): the files it leaves, as outputs."""
    edited = files if target is None else {name: text.encode("utf-8") for name, text in target.items()}
    try:
        with run_agent(files, ENTRY, timeout_s=timeout_s) as agent:
            workspace = os.path.join(agent.folder, "workspace")
            for name, data in edited.items():
                path = os.path.join(workspace, *name.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as fh:
                    fh.write(data)
            log, ended = solve(agent, workspace, statement)
            outputs, skipped = read_tree(workspace)
    except AgentError as exc:
        return {"valid": False, "feedback": f"the agent does not start: {exc}"}
    return {"outputs": outputs, "metrics": {"ended": ended, "skipped": skipped}, "feedback": log[-2000:]}


def evaluate_batch(genomes, args):
    if args.get("self_edit"):
        return [self_edit(files, str(args["self_edit"]), float(args.get("problem_timeout_s", 600)),
                          args.get("edit_files")) for files in genomes]
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
