"""Mutation operators: LLM-free baselines (and, later, foundation-model operators)."""
