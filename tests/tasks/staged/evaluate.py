"""Staged toy evaluator: fitness = -distance of the two weights to (1, 1), measured more strictly the
more problems a stage runs (-distance x (1 + problems / 100)); descriptors = the weights. ``problems``
and ``sleep_s`` come from the stage's evaluate_args. With the model gateway (the ``gateway`` variant) it
asks the model "<tag> <weights>" once per agent, so the model's log shows which stage each child ran."""

import io
import os
import time

import numpy as np


def evaluate_batch(genomes, args):
    time.sleep(float(args.get("sleep_s", 0.0)))
    problems = int(args.get("problems", 1))
    results = []
    for files in genomes:
        w = np.load(io.BytesIO(files["weights.npy"]))
        if os.environ.get("OPENENDED_MODEL_SOCKET"):
            from sandboxes.model import chat

            chat([{"role": "user", "content": f"{args.get('tag')} {w[0]!r} {w[1]!r}"}], max_tokens=8)
        fitness = max(-12.0, -float(np.hypot(w[0] - 1.0, w[1] - 1.0)) * (1 + problems / 100))
        x, y = (float(np.clip(v, -4.0, 4.0)) for v in w[:2])
        results.append({"fitness": fitness, "descriptors": [x, y], "metrics": {"problems": problems},
                        "feedback": f"at ({w[0]:.3f}, {w[1]:.3f}) on {problems} problems", "valid": True})
    return results
