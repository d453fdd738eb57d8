"""Our code evolution beside OpenEvolve (PyPI openevolve 0.4.1) and ShinkaEvolve (PyPI shinka-evolve 0.0.7)
at an equal number of model calls, on the built-in tasks circle-packing and binpack.

    python bench/code_peers.py --out peers.json [--calls 30] [--seeds 3] [--tasks circle-packing binpack]
    python bench/code_peers.py --out peers.json --base-url https://HOST/v1 --model NAME --api-key-env VAR
    python bench/code_peers.py --smoke --out peers.json   # CI: a scripted model, 3 calls, 1 seed

All three systems talk to the same OpenAI-compatible endpoint: the embedded Gemma 3 270M (llama.cpp's
server, started as openended starts it) unless --base-url is given; the key, if any, is read from the
environment variable named by --api-key-env and added by a local proxy, never written anywhere. Ours
is the default configuration (`openended run` on the built-in task, the embedded model with `llm.local`);
each peer runs its own documented configuration for such a task (see bench/peers/systems.py), with the
task statement (the task's prompt.md) as its system message and the seed program as its initial program.
The same function, our task's evaluator, scores every system's programs (bench/peers/scoring.py).

Per system and task (each seed in `runs`, and a `summary`): best, evaluations_to (evaluations until
the best exceeds the seed, and reaches 0.85 / 0.90 / 0.95 of the best known sum of radii, or excess
4 / 3 / 2 % on binpack), valid_child_rate and distinct_child_rate (children = model calls; distinct =
a program unlike every earlier one of the run after normalisation), tokens_per_valid_child, wall_s.
`targets`: our valid and distinct child rates at least 2x each peer's, our best at least each peer's.

OpenEvolve installs beside us (`pip install -e '.[peers]'`); ShinkaEvolve pins packages of ours (httpx,
openai) and is installed once into a virtual environment under ~/.cache/openended/peers/ (--cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import metrics, scoring  # noqa: E402
from peers.systems import Endpoint, run_ours, run_peer  # noqa: E402

SYSTEMS = ("ours", "openevolve", "shinka")
TASKS = ("circle-packing", "binpack")
# The embedded model's context is 8,192 tokens: the peers' documented max_tokens (8,192 and 32,768) do not fit
# beside a prompt there, and a 270M model rambles to any limit; with it each peer's answers get the limit ours
# gets for a rewrite of the task's seed (2 x its tokens, at least 256): see embedded_peer_max_tokens.


def embedded_peer_max_tokens(task: str) -> int:
    """The embedded model's answer limit for a whole-program rewrite of ``task``'s seed, as ours computes it."""
    from openended.config import CampaignConfig
    from openended.mutation.output_limits import max_output_tokens
    from openended.names import LOCAL_MODEL

    return max_output_tokens(CampaignConfig(), LOCAL_MODEL, "llm_rewrite", scoring.seed_code(task))


# The scripted model's edit: the seed's line it changes, and the change (the n-th answer's variant).
SCRIPTED_EDIT = {"circle-packing": ("r * (1 - 1e-12)", "r * (1 - {n}e-9)"),
                 "binpack": ("return -(bins - item)", "return -(bins - item) + {n} * 0.01 * (bins == bins.max())")}


def scripted_answer(task: str, prompt: str, n: int) -> str:
    """The scripted model's answer in the form the prompt asks for: the rest of a SEARCH/REPLACE edit whose
    SEARCH text the prompt already holds (ours, focused), the rest of a primed program (ours, rewrite), a
    whole SEARCH/REPLACE block (a peer asking for a diff), else a fenced program: the seed with its one line
    changed, a different valid variant each time."""
    old, new = SCRIPTED_EDIT[task]
    new = new.format(n=n)
    program = scoring.seed_code(task).replace(old, new)
    line = next(x for x in program.splitlines() if new in x)
    opened = prompt.rfind("<<<<<<< SEARCH")
    if opened >= 0 and "=======" not in prompt[opened:]:
        focus = prompt[opened + len("<<<<<<< SEARCH"):].strip("\n")
        if not focus:  # a chat model writes the SEARCH text too
            return f"{line.replace(new, old)}\n=======\n{line}\n>>>>>>> REPLACE\n"
        return "\n=======\n" + (focus.replace(old, new) if old in focus else focus + "  # unchanged") + \
            "\n>>>>>>> REPLACE\n"
    fence = prompt.rfind("```python\n")
    if fence >= 0 and "```" not in prompt[fence + 10:]:
        primed = prompt[fence + 10:]
        return (program[len(primed):] if program.startswith(primed) else "") + "```\n"
    if "SEARCH" in prompt and "REPLACE" in prompt:
        return f"<<<<<<< SEARCH\n{line.replace(new, old)}\n=======\n{line}\n>>>>>>> REPLACE\n"
    return f"```python\n{program}```\n"


def start_scripted() -> Any:
    """The scripted OpenAI-compatible server of tests/llm (a real HTTP server on loopback)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "llm"))
    from llm_fault_server import FaultServer, ok, respond

    count = {"n": 0}

    def answer(request: Any) -> Any:
        count["n"] += 1
        task = "circle-packing" if "circle" in request.prompt.lower() else "binpack"
        return ok(scripted_answer(task, request.prompt, count["n"]), usage=(len(request.prompt) // 4, 60))

    return FaultServer(default=respond(answer)).start()


def start_embedded(server: Any) -> Any:
    """The embedded model's server as openended starts it, plus llama.cpp's Gemma chat template: the peers
    speak only chat, and without it the server formats their messages as Llama 2's (its fallback). Ours
    speaks to the embedded model with completion-style prompts, which no chat template touches."""
    from unittest import mock

    import openended.llm.local as local

    popen = subprocess.Popen

    def with_template(command: list[str], *args: Any, **kwargs: Any) -> subprocess.Popen:
        return popen([*command, "--chat_format", "gemma"], *args, **kwargs)

    with mock.patch.object(local.subprocess, "Popen", with_template):
        return server.start()


def peer_limit(endpoint: Endpoint, task: str) -> int | None:
    """The peers' max_tokens on ``task``: as given; else, with the embedded model, sized to the task's seed;
    else None (their documented values)."""
    if endpoint.peer_max_tokens is None and endpoint.embedded:
        return embedded_peer_max_tokens(task)
    return endpoint.peer_max_tokens


def targets(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, systems in results.items():
        ours = systems.get("ours", {}).get("summary")
        if not ours:
            continue
        for peer in ("openevolve", "shinka"):
            theirs = systems.get(peer, {}).get("summary")
            if not theirs:
                continue
            check: dict[str, Any] = {}
            for rate in ("valid_child_rate", "distinct_child_rate"):
                a, b = ours[rate], theirs[rate]
                check[f"{rate}_2x"] = bool(a) and (b is None or a >= 2 * b)
            mine, other = ours["best"], theirs["best"]
            check["best_at_least"] = mine is not None and (other is None or mine >= other)
            out[f"{task}/{peer}"] = check
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="a scripted model, 3 calls, 1 seed: checks the script")
    parser.add_argument("--calls", type=int, default=30, help="model calls per system, task and seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint instead of the embedded model")
    parser.add_argument("--model", help="the model's name at --base-url")
    parser.add_argument("--api-key-env", metavar="VAR", help="NAME of the environment variable holding the key")
    parser.add_argument("--api", choices=("chat", "completion"), default="chat", help="how ours speaks to --base-url")
    parser.add_argument("--peer-max-tokens", type=int, help="the peers' max_tokens (default: their documented "
                        "values; with the embedded model, what ours gets to rewrite the task's seed)")
    parser.add_argument("--workdir", help="keep every run's files here (default: a temporary folder)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "openended" / "peers"),
                        help="where peers that cannot live beside us get their virtual environments")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the systems' processes on the way out
    if args.base_url and not args.model:
        parser.error("--base-url needs --model")
    if args.peer_max_tokens is not None and args.peer_max_tokens < 1:
        parser.error(f"--peer-max-tokens must be at least 1, not {args.peer_max_tokens}")
    if args.smoke:
        args.calls, args.seeds = 3, 1

    server: Any = None
    if args.smoke:
        server = start_scripted()
        endpoint = Endpoint(server.base_url, "scripted", peer_max_tokens=args.peer_max_tokens)
    elif args.base_url:
        endpoint = Endpoint(args.base_url, args.model, api_key_env=args.api_key_env, api=args.api,
                            peer_max_tokens=args.peer_max_tokens)
    else:
        from openended.llm.local import LocalModelServer

        server = start_embedded(LocalModelServer())  # the peers' endpoint; ours starts its own, as `openended run` does
        endpoint = Endpoint(server.base_url, server.model, embedded=True, peer_max_tokens=args.peer_max_tokens)

    result: dict[str, Any] = {
        "smoke": args.smoke, "calls": args.calls, "seeds": args.seeds,
        "endpoint": "scripted" if args.smoke else ("embedded" if endpoint.embedded else args.base_url),
        "model": endpoint.model, "peer_max_tokens": {t: peer_limit(endpoint, t) for t in args.tasks},
        "versions": {"openevolve": "0.4.1", "shinka-evolve": "0.0.7"}, "results": {}}
    runs: dict[str, dict[str, list]] = {t: {s: [] for s in args.systems} for t in args.tasks}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="code_peers.") as tmp:
        root = Path(args.workdir or tmp)
        try:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for task in args.tasks:
                    for system in args.systems:
                        workdir = root / f"{task}-{system}-seed{seed}"
                        shutil.rmtree(workdir, ignore_errors=True)  # a campaign left there would be resumed
                        workdir.mkdir(parents=True)
                        print(f"{task} {system} seed {seed}: {args.calls} model calls", flush=True)
                        sandbox = "process" if args.smoke else None
                        if system == "ours":
                            run = run_ours(task, seed, args.calls, endpoint, workdir, sandbox=sandbox)
                        else:
                            peer_endpoint = dataclasses.replace(endpoint, peer_max_tokens=peer_limit(endpoint, task))
                            run = run_peer(system, task, seed, args.calls, peer_endpoint, workdir, Path(args.cache))
                        figures = {"seed_index": seed, **metrics.run_metrics(task, run)}
                        print(json.dumps(figures), flush=True)
                        runs[task][system].append(figures)
                        result["results"] = {t: {s: {"summary": metrics.summary(t, r), "runs": r}
                                                 for s, r in by.items() if r} for t, by in runs.items()}
                        result["targets"] = targets(result["results"])
                        result["total_seconds"] = round(time.monotonic() - started, 1)
                        Path(args.out).write_text(json.dumps(result, indent=2))
        finally:
            if server is not None:
                (server.stop if hasattr(server, "stop") else server.close)()
    print(json.dumps({"targets": result.get("targets"), "total_seconds": result.get("total_seconds")}, indent=2))


if __name__ == "__main__":
    main()
