def evaluate_batch(genomes, args):
    return [{"fitness": 0.0, "descriptors": [0.0], "valid": True} for _ in genomes]
