"""The acting half of the scored test task: runs the agent (in a process of its own) on three sums and
returns its answers, and what it found when it looked for the hidden answers, as outputs. It also claims a
perfect fitness, in its result and in an output file: only the scorer's counts."""

import json

from sandboxes.agent import AgentError, run_agent

PROBLEMS = [[2, 3], [10, 5], [7, 7]]


def evaluate_batch(genomes, args):
    results = []
    for files in genomes:
        try:
            with run_agent(files, "agent.py", timeout_s=20) as agent:
                reply = agent.call("solve", PROBLEMS)
        except AgentError as exc:
            results.append({"outputs": {}, "feedback": f"the agent failed: {exc}"})
            continue
        reply = reply if isinstance(reply, dict) else {}
        outputs = {"answers.json": json.dumps(reply.get("answers"), default=str),
                   "probe.json": json.dumps(reply.get("probe"), default=str),
                   "score.json": json.dumps({"fitness": 1.0})}
        if args.get("hostile"):
            outputs["../escape.txt"] = "out of the agent's folder"
        results.append({"outputs": outputs, "fitness": 1.0, "descriptors": [3.0],
                        "metrics": {"acted": True, "right": 3}, "feedback": "acted on 3 problems"})
    return results
