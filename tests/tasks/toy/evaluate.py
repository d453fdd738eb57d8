"""Toy evaluator: fitness = -distance of the two weights to (1, 1); descriptors = the weights.

Both are clipped into the bounds task.toml declares (fitness >= -12, descriptors in [-4, 4]): the
driver refuses a result outside them.
"""

import io
import os
import time

import numpy as np


def evaluate_batch(genomes, args):
    time.sleep(float(args.get("sleep_s", 0.0)))
    results = []
    for files in genomes:
        w = np.load(io.BytesIO(files["weights.npy"]))
        if "crash_above" in args and w[0] > args["crash_above"]:
            os._exit(3)
        if "hang_above" in args and w[0] > args["hang_above"]:
            time.sleep(3600)
        fitness = max(-12.0, -float(np.hypot(w[0] - 1.0, w[1] - 1.0)))
        x, y = (float(np.clip(v, -4.0, 4.0)) for v in w[:2])
        results.append({"fitness": fitness, "descriptors": [x, y],
                        "metrics": {"x": float(w[0])}, "feedback": f"at ({w[0]:.3f}, {w[1]:.3f})", "valid": True})
    return results
