"""Evaluator of the deceptive-maze task; runs inside the sandbox (stdlib + numpy + maze_sim only).

Library: ``evaluate_batch(genomes, args) -> list[dict]`` (one result per genome, in order).
CLI:     ``python evaluate.py --out OUT.json [--arg key=value ...] AGENT_DIR [AGENT_DIR ...]``

A genome is a dict of file name -> bytes holding ``weights.npy``: the 142 float64 weights of the
fixed controller of ``maze_sim`` (11 inputs -> 10 tanh -> 2 sigmoid). Fitness is minus the final
distance to the exit; descriptors are the final (x, y). All valid genomes of a batch are simulated
in one vectorised call; an invalid genome gets ``valid: false`` and a precise reason.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import maze_sim  # noqa: E402
import numpy as np  # noqa: E402

PARAMS_FILE = "weights.npy"
_MAZES: dict[str, maze_sim.Maze] = {}


def _maze(name: str) -> maze_sim.Maze:
    if name not in _MAZES:
        _MAZES[name] = maze_sim.load_maze(name)
    return _MAZES[name]


def _invalid(reason: str) -> dict:
    return {"valid": False, "feedback": reason, "fitness": None, "descriptors": None, "metrics": {}}


def load_weights(files: dict[str, bytes]) -> np.ndarray:
    """The (PARAM_COUNT,) float64 weights of a genome; ValueError with a precise reason otherwise."""
    if PARAMS_FILE not in files:
        raise ValueError(f"genome has no {PARAMS_FILE} (files: {sorted(files) or 'none'})")
    data = files[PARAMS_FILE]
    if isinstance(data, str):
        data = data.encode("latin-1")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is the genome's fault
        raise ValueError(f"{PARAMS_FILE} is not a loadable .npy array: {type(exc).__name__}: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{PARAMS_FILE} holds a {type(arr).__name__}, not a single array")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{PARAMS_FILE} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != maze_sim.PARAM_COUNT:
        raise ValueError(
            f"{PARAMS_FILE} must be a 1-D array of {maze_sim.PARAM_COUNT} weights, got shape {arr.shape}"
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ValueError(
            f"{PARAMS_FILE} holds {bad.size} non-finite value(s) (NaN or inf), first at index {int(bad[0])}"
        )
    return arr


def evaluate_batch(genomes: list[dict[str, bytes]], args: dict) -> list[dict]:
    """Evaluate genomes in ``args["map"]`` ("medium" or "hard"; optional ``steps``, default 400).

    Returns one result per genome: ``{"fitness": -d, "descriptors": [x, y], "metrics": {}, "feedback", "valid":
    True}`` (d: the final distance to the exit; solved when d < 5, and only then a feedback, saying so), or an
    invalid result with the reason.
    """
    args = dict(args or {})
    map_name = str(args.get("map", "medium"))
    steps = int(args.get("steps", maze_sim.STEPS))
    maze = _maze(map_name)
    results: list[dict | None] = [None] * len(genomes)
    rows, index = [], []
    for i, files in enumerate(genomes):
        try:
            rows.append(load_weights(files))
            index.append(i)
        except ValueError as exc:
            results[i] = _invalid(str(exc))
    if rows:
        final = maze_sim.simulate(maze, np.stack(rows), steps=steps)
        dists = np.hypot(final[:, 0] - maze.goal[0], final[:, 1] - maze.goal[1])
        for i, (x, y), d in zip(index, final.tolist(), dists.tolist(), strict=True):
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(d)):
                results[i] = _invalid("simulation produced a non-finite position (weights too large to compute)")
                continue
            # No metrics, and feedback only for a solver: the row's fitness (-d) and descriptors (x, y) say the
            # rest, and a restatement cost ~100 of a maze child's ~560 stored bytes (issue 18). No model reads
            # it: LLM operators need a code genome.
            feedback = f"solved: ended {d:.2f} from the exit" if d < maze_sim.SOLVED_DISTANCE else ""
            results[i] = {
                "fitness": -d,
                "descriptors": [x, y],
                "metrics": {},
                "feedback": feedback,
                "valid": True,
            }
    return results  # type: ignore[return-value]


def _read_agent(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _parse_arg(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--arg expects key=value, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate maze agents (folders holding weights.npy).")
    parser.add_argument("--out", required=True, help="where to write the JSON list of results")
    parser.add_argument("--arg", action="append", default=[], type=_parse_arg, metavar="KEY=VALUE",
                        help="evaluation argument, e.g. map=hard (repeatable)")
    parser.add_argument("agents", nargs="+", help="agent folders")
    ns = parser.parse_args(argv)
    genomes = []
    for agent in ns.agents:
        folder = Path(agent)
        genomes.append(_read_agent(folder) if folder.is_dir() else {})
    results = evaluate_batch(genomes, dict(ns.arg))
    for agent, res in zip(ns.agents, results, strict=True):
        if not Path(agent).is_dir():
            res.update(_invalid(f"agent folder {agent} does not exist"))
    Path(ns.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
