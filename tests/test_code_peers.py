"""bench/code_peers.py's logic: the one scoring function behind every system's evaluator, the figures
computed from a run's events, and the counting proxy that gives each system its share of model calls."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import types
import urllib.request
from pathlib import Path

import pytest
from llm_fault_server import FaultServer, ok

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from peers import metrics, scoring  # noqa: E402
from peers.proxy import CountingProxy  # noqa: E402

from openended.sandbox.inprocess import load_evaluator  # noqa: E402
from openended.tasks import load_task  # noqa: E402

BETTER_CIRCLES = '''import numpy as np

def pack(n):
    # 26 circles of radius 0.1 would not fit; these 25 plus one small one do
    rows = [[0.1 + 0.2 * (i % 5), 0.1 + 0.2 * (i // 5), 0.1 * (1 - 1e-9)] for i in range(25)]
    rows.append([0.2, 0.2, 0.0414 * (1 - 1e-9)])  # the gap between four circles
    return np.array(rows)
'''


def _openevolve_result_stub(monkeypatch) -> None:
    """OpenEvolve's EvaluationResult, when the peers extra is not installed here."""
    if importlib.util.find_spec("openevolve") is not None:
        return

    class EvaluationResult:
        def __init__(self, metrics, artifacts):
            self.metrics, self.artifacts = metrics, artifacts

    package = types.ModuleType("openevolve")
    module = types.ModuleType("openevolve.evaluation_result")
    module.EvaluationResult = EvaluationResult  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "openevolve", package)
    monkeypatch.setitem(sys.modules, "openevolve.evaluation_result", module)


@pytest.mark.parametrize("task, code", [
    ("circle-packing", None), ("circle-packing", BETTER_CIRCLES), ("circle-packing", "def pack(n):\n    return 1\n"),
    ("binpack", None), ("binpack", "def priority(item, bins):\n    return bins\n"),
])
def test_every_system_s_evaluator_scores_a_program_as_our_task_does(task, code, tmp_path, monkeypatch):
    code = code if code is not None else scoring.marked_seed(task)
    task_obj = load_task(task)
    ours = load_evaluator(str(task_obj.root))([{task_obj.spec.code_file: code.encode()}], task_obj.evaluate_args)[0]
    expected_valid = bool(ours.get("valid", True)) and ours.get("fitness") is not None
    program = tmp_path / "program.py"
    program.write_text(code)

    _openevolve_result_stub(monkeypatch)
    oe_log = tmp_path / "oe.jsonl"
    spec = importlib.util.spec_from_file_location(
        "oe_evaluator", scoring.write_openevolve_evaluator(tmp_path / "oe_evaluator.py", task, oe_log))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    oe = module.evaluate(str(program))

    sh_log = tmp_path / "shinka.jsonl"
    evaluator = scoring.write_shinka_evaluator(tmp_path / "evaluate.py", task, sh_log)
    subprocess.run([sys.executable, str(evaluator), "--program_path", str(program), "--results_dir",
                    str(tmp_path / "results")], check=True, capture_output=True)
    sh_metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    sh_correct = json.loads((tmp_path / "results" / "correct.json").read_text())

    expected_score = ours["fitness"] if expected_valid else scoring.INVALID_SCORE[task]
    assert oe.metrics["combined_score"] == expected_score
    assert sh_metrics["combined_score"] == expected_score
    assert oe.metrics["validity"] == float(expected_valid) and sh_correct["correct"] is expected_valid
    assert oe.artifacts["feedback"] == sh_metrics["text_feedback"] == ours["feedback"]
    for log in (oe_log, sh_log):  # what the bench reads back: the program and its result
        (entry,) = scoring.read_log(log)
        assert (entry["code"], entry["valid"], entry["fitness"]) == (code, expected_valid,
                                                                     ours["fitness"] if expected_valid else None)
        assert not scoring.busy(log)
    if code == BETTER_CIRCLES:
        assert expected_valid and ours["fitness"] > 2.5


def _event(code, fitness, model_child=True, evaluated=True):
    return {"model_child": model_child, "code": code, "evaluated": evaluated, "valid": fitness is not None,
            "fitness": fitness}


def test_run_figures_count_children_per_model_call_and_normalised_duplicates_once():
    seed = scoring.seed_code("circle-packing")
    seed_fitness = 26 / 12 * (1 - 1e-12)
    reformatted = "# a comment\n" + seed.replace("1 / 12.0", "1/12.0")
    events = [
        _event(seed, seed_fitness, model_child=False),           # the seed's evaluation
        _event(reformatted, seed_fitness),                         # the seed up to formatting: not distinct
        _event("def pack(n):\n    return 1\n", None),              # invalid, distinct
        _event(BETTER_CIRCLES, 2.5414),                            # exceeds the seed and 0.95 x 2.635
        _event(None, None, evaluated=False),                       # an answer with no program
        _event("import numpy as np\n" + BETTER_CIRCLES, 2.5414, model_child=False),  # a free child (ast)
    ]
    run = {"events": events, "calls": 4, "tokens_in": 300, "tokens_out": 100, "wall_s": 12.0}
    figures = metrics.run_metrics("circle-packing", run)
    assert figures["children"] == 4 and figures["evaluations"] == 5
    assert figures["valid_child_rate"] == 2 / 4
    assert figures["distinct_child_rate"] == 2 / 4
    assert figures["tokens_per_valid_child"] == 400 / 2 and figures["output_tokens_per_valid_child"] == 50
    assert figures["best"] == 2.5414 and figures["improved"]
    assert figures["evaluations_to"] == {"exceed_seed": 4, "0.85_of_best_known": 4, "0.90_of_best_known": 4,
                                         "0.95_of_best_known": 4}
    assert metrics.summary("circle-packing", [figures, figures])["evaluations_to"]["exceed_seed"] == [4, 4]


def test_the_proxy_counts_calls_and_tokens_adds_the_key_and_holds_calls_past_the_budget(monkeypatch):
    monkeypatch.setenv("CODE_PEERS_TEST_KEY", "sk-test-123")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with FaultServer(default=ok("hello", usage=(11, 7))) as server, \
            CountingProxy(server.base_url, api_key_env="CODE_PEERS_TEST_KEY", budget=2) as proxy:
        def call() -> dict:
            request = urllib.request.Request(proxy.base_url + "/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        assert call()["choices"][0]["message"]["content"] == "hello"
        assert call()["usage"]["completion_tokens"] == 7
        def held_call() -> None:
            try:
                call()
            except OSError:  # the proxy closed: the held call never gets an answer
                pass

        held = threading.Thread(target=held_call, daemon=True)
        held.start()
        held.join(1.0)
        assert held.is_alive(), "the third call is held, not answered"
        assert proxy.snapshot() == {"calls": 2, "answered": 2, "held": 1, "tokens_in": 22, "tokens_out": 14}
        assert [r.headers.get("authorization") for r in server.requests] == ["Bearer sk-test-123"] * 2
