"""Evaluator of the gateway tests' task: runs each agent's agent.py through run_agent and returns what
its run(args) returns (in the feedback, as JSON), with what the evaluator itself sees."""

import json
import os

from sandboxes.agent import AgentError, run_agent


def evaluate_batch(genomes, args):
    results = []
    for files in genomes:
        try:
            with run_agent(files, "agent.py", timeout_s=float(args.get("agent_timeout_s", 30))) as agent:
                reply = agent.call("run", dict(args))
        except AgentError as exc:
            reply = {"agent_error": str(exc)}
        seen = {"agent": reply, "evaluator_env": dict(os.environ)}
        results.append({"fitness": 1.0, "descriptors": [0.0, 0.0], "feedback": json.dumps(seen), "valid": True})
    return results
