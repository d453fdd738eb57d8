"""Runs agent.py's run() through run_agent; the agent calls the model through the gateway."""

import json

from sandboxes.agent import AgentError, run_agent


def evaluate_batch(genomes, args):
    results = []
    for files in genomes:
        try:
            with run_agent(files, "agent.py", timeout_s=20) as agent:
                reply = agent.call("run")
            calls = float(min(10, max(0, int(reply["calls"]))))
        except (AgentError, KeyError, TypeError, ValueError) as exc:
            results.append({"valid": False, "feedback": str(exc)[:300], "fitness": -100.0, "descriptors": [0.0]})
            continue
        results.append({"fitness": -abs(calls - 3), "descriptors": [calls], "feedback": json.dumps(reply)[:2000]})
    return results
