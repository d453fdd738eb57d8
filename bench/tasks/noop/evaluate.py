"""No-op evaluator for the engine benchmark."""


def evaluate_batch(genomes, args):
    return [{"fitness": 0.0, "descriptors": [0.0, 0.0], "metrics": {}, "feedback": "", "valid": True} for _ in genomes]
