"""Helpers of bench/code_peers.py: our code evolution beside OpenEvolve and ShinkaEvolve at equal model calls.

- :mod:`scoring`: the one scoring function every system's programs go through (our task's evaluator),
  and the evaluator files that wrap it for OpenEvolve (``evaluate(program_path)``) and ShinkaEvolve
  (``evaluate.py --program_path --results_dir``);
- :mod:`proxy`: an OpenAI-compatible counting proxy in front of the endpoint (calls, tokens, the key);
- :mod:`systems`: how each system is run (ours through ``openended run``; each peer in a process of its own);
- :mod:`metrics`: best, evaluations to thresholds, valid/distinct child rates, tokens per valid child.
"""
