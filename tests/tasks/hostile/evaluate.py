"""Evaluator of the hostile test task: runs each agent's child.py and returns what its run() returns."""

import json
import sys
from pathlib import Path


def evaluate_batch(genomes, args):
    results = []
    for files in genomes:
        namespace = {"__name__": "child"}
        exec(compile(files["child.py"].decode(), "child.py", "exec"), namespace)
        results.append(namespace["run"]())
    return results


if __name__ == "__main__":
    out = sys.argv[sys.argv.index("--out") + 1]
    agents = [a for a in sys.argv[1:] if a != "--out" and a != out]
    genomes = [{p.name: p.read_bytes() for p in Path(a).iterdir()} for a in agents]
    Path(out).write_text(json.dumps(evaluate_batch(genomes, {})))
