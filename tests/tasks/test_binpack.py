"""The online bin-packing task (openended/tasks/binpack): instances, seed = best fit, invalid agents, CLI."""

import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from openended.results import check_result
from openended.tasks import builtin_task_names, load_task
from sandboxes.agent import ForgedResult

BINPACK_DIR = Path(__file__).resolve().parents[2] / "openended" / "tasks" / "binpack"
TASK = load_task("binpack")
ARGS = TASK.evaluate_args


def _load_evaluator():
    name = "_binpack_evaluate_under_test"
    spec = importlib.util.spec_from_file_location(name, BINPACK_DIR / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ev = _load_evaluator()

FIRST_FIT = "import numpy as np\n\ndef priority(item, bins):\n    return -np.arange(len(bins), dtype=float)\n"


def agent(source: str) -> dict[str, bytes]:
    return {"priority.py": source.encode()}


def evaluate(source: str, **args) -> dict:
    [result] = ev.evaluate_batch([agent(source)], {**ARGS, **args})
    return result


def independent_best_fit(items) -> int:
    """Bins used by best fit, written independently of the evaluator: plain lists, no numpy."""
    room: list[float] = []
    for item in items:
        fitting = [i for i, r in enumerate(room) if r >= item]
        if fitting:
            best = min(fitting, key=lambda i: (room[i], i))
            room[best] -= item
        else:
            room.append(100 - item)
    return len(room)


def independent_first_fit(items) -> int:
    room: list[float] = []
    for item in items:
        for i, r in enumerate(room):
            if r >= item:
                room[i] -= item
                break
        else:
            room.append(100 - item)
    return len(room)


# --- the task folder --------------------------------------------------------------------------


def test_task_is_a_builtin_with_a_code_genome():
    assert "binpack" in builtin_task_names()
    assert TASK.genome_kind == "code" and TASK.spec.code_file == "priority.py"
    assert TASK.spec.entry_point == "priority" and TASK.batchable is False
    assert TASK.descriptor_space["names"] == ["fullest_share", "new_bin_share"]
    assert set(TASK.seed_files()) == {"priority.py"}
    assert "def priority(item: float, bins: np.ndarray) -> np.ndarray" in TASK.prompt()


def test_instances_follow_the_documented_distribution():
    items = np.concatenate(ev.instances({**ev.DEFAULTS, **ARGS}))
    assert items.size == ARGS["instances"] * ARGS["items"]
    assert np.all(items == np.round(items)) and items.min() >= 1 and items.max() <= 100
    # Weibull(k=3, scale 45): mean 45 * Gamma(4/3) = 40.19, sd 45 * sqrt(Gamma(5/3) - Gamma(4/3)^2) = 16.35
    assert abs(items.mean() - 45 * math.gamma(4 / 3)) < 0.5
    assert abs(items.std() - 45 * math.sqrt(math.gamma(5 / 3) - math.gamma(4 / 3) ** 2)) < 0.5
    again = np.concatenate(ev.instances({**ev.DEFAULTS, **ARGS, "seed": 0}))
    other = np.concatenate(ev.instances({**ev.DEFAULTS, **ARGS, "seed": 1}))
    assert np.array_equal(items, again) and not np.array_equal(items, other)


# --- fitness and descriptors ------------------------------------------------------------------


def test_seed_is_best_fit():
    result = evaluate(TASK.seed_files()["priority.py"].decode())
    assert result["valid"] is True
    instances = ev.instances({**ev.DEFAULTS, **ARGS})
    bounds = [math.ceil(items.sum() / 100) for items in instances]
    bins = [independent_best_fit(items.tolist()) for items in instances]
    expected = [100 * (b - lb) / lb for b, lb in zip(bins, bounds, strict=True)]
    assert result["fitness"] == pytest.approx(-np.mean(expected))
    assert result["metrics"]["bins"] == sum(bins) and result["metrics"]["lower_bound"] == sum(bounds)
    # best fit always picks the fullest fitting bin and never opens a bin while an opened one fits
    assert result["descriptors"] == [1.0, 0.0]
    check_result(result, n_descriptors=2)


def test_first_fit_is_no_better_and_measured_independently():
    best = evaluate(TASK.seed_files()["priority.py"].decode())
    first = evaluate(FIRST_FIT)
    assert first["fitness"] <= best["fitness"]
    instances = ev.instances({**ev.DEFAULTS, **ARGS})
    assert first["metrics"]["bins"] == sum(independent_first_fit(items.tolist()) for items in instances)
    fullest, new_bin = first["descriptors"]
    assert 0.5 < fullest < 1.0 and new_bin == 0.0


def test_always_a_new_bin_uses_one_bin_per_item():
    result = evaluate("def priority(item, bins):\n    return bins\n", items=50, instances=2)
    assert result["metrics"]["bins"] == 100 and result["descriptors"] == [0.0, 1.0]
    assert result["fitness"] >= TASK.fitness_lower


def test_deterministic():
    source = "import numpy as np\n\ndef priority(item, bins):\n    return -np.abs(bins - item - 3)\n"
    a, b = evaluate(source), evaluate(source)
    a["metrics"].pop("seconds"), b["metrics"].pop("seconds")
    assert a == b


def test_agent_cannot_change_the_bins_it_is_shown():
    vandal = "import numpy as np\n\ndef priority(item, bins):\n    s = -(bins - item)\n    bins[:] = 0\n    return s\n"
    assert evaluate(vandal)["fitness"] == evaluate(TASK.seed_files()["priority.py"].decode())["fitness"]


def test_prints_do_not_reach_stdout(capfd):
    result = evaluate("def priority(item, bins):\n    print('x' * 100)\n    return -(bins - item)\n", items=20)
    assert result["valid"] and capfd.readouterr().out == ""


# --- invalid agents ---------------------------------------------------------------------------


@pytest.mark.parametrize("source,reason", [
    ("def priority(item, bins)\n    return bins\n", r"^priority\.py does not parse: line 1: expected ':'$"),
    ("import numpy as np\n\ndef score(item, bins):\n    return bins\n",
     r"^priority\.py defines no function 'priority' \(callables defined: \['score'\]\)$"),
    ("priority = 3\n", r"defines no function 'priority'"),
    ("raise RuntimeError('boom')\n",
     r"^priority\.py failed while loading: RuntimeError: boom at line 1: `raise RuntimeError\('boom'\)`$"),
    ("import sys\nsys.exit(3)\n", r"failed while loading: SystemExit: 3 at line 2"),
    ("def priority(item, bins):\n    gap = bins - item\n    return 1 // int(gap.min() * 0)\n",
     r"^priority raised ZeroDivisionError: integer division or modulo by zero at line 3: "
     r"`return 1 // int\(gap\.min\(\) \* 0\)` \(on item 0 \(size \d+\) of instance 0, \d+ feasible bins\)$"),
    ("def priority(item, bins):\n    return 0.0\n",
     r"must return one score per feasible bin, shape \(\d+,\); returned shape \(\) \(on item 0"),
    ("import numpy as np\n\ndef priority(item, bins):\n    return np.ones((len(bins), 2))\n",
     r"returned shape \(\d+, 2\)"),
    ("def priority(item, bins):\n    return 'abc'\n", r"must return numbers, returned str"),
    ("import numpy as np\n\ndef priority(item, bins):\n    return (bins - 100) / (bins - 100)\n",
     r"^priority returned NaN for \d+ of the bins \(on item 0"),
])
def test_invalid_agents_get_a_precise_reason(source, reason):
    result = evaluate(source, items=30)
    assert result["valid"] is False and result["fitness"] is None
    assert result["feedback"] and re.search(reason, result["feedback"]), result["feedback"]


def test_missing_or_binary_file():
    missing, binary = ev.evaluate_batch([{"other.py": b"x"}, {"priority.py": b"\xff\xfe"}], ARGS)
    assert missing["feedback"] == "genome has no priority.py (files: ['other.py'])"
    assert binary["feedback"].startswith("priority.py is not UTF-8 text")


def test_too_slow():
    result = evaluate("def priority(item, bins):\n    return -(bins - item)\n", max_seconds=0.0)
    assert result["valid"] is False and result["feedback"].startswith("too slow: packing exceeded the time budget")


def test_an_endless_priority_is_stopped_at_the_budget():
    started = time.monotonic()
    result = evaluate("def priority(item, bins):\n    while True:\n        pass\n", max_seconds=1.0)
    assert time.monotonic() - started < 5
    expected = (r"^too slow: packing exceeded the time budget of 1s \(stopped at item 0 \(size \d+\) of "
                r"instance 0, \d+ feasible bins\); keep priority vectorised$")
    assert re.match(expected, result["feedback"]), result["feedback"]


# --- the agent runs in a process of its own (sandboxes.agent.run_agent) -------------------------

#: The forgery of the issue: write the runner's result file with a perfect score and exit 0.
FORGER = ("import os\n"
          "open('.result.json', 'w').write('[{\"fitness\": 0.0, \"descriptors\": [0.5, 0.5], \"valid\": true}]')\n"
          "os._exit(0)\n")


def test_the_forgery_of_the_issue_fails_its_evaluation():
    """In the evaluator's process this scored 0.0 (perfect); now it only ends the agent's own process."""
    [result] = ev.evaluate_batch([agent(FORGER)], ARGS)
    assert result["valid"] is False and result["fitness"] is None
    assert result["feedback"] == "the agent's process died while loading priority.py: it exited with status 0"


def test_a_forged_result_file_in_the_runners_working_folder_ends_the_batch(tmp_path, monkeypatch):
    """Where the runner's result file lives (its working folder, also $TMPDIR), a write is a ForgedResult,
    which no `except Exception` stops: the runner fails the evaluation with kind forged_result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    forger = FORGER.replace("'.result.json'", "'../.result.json'").replace("os._exit(0)\n", "")
    forger += "def priority(item, bins):\n    return -(bins - item)\n"
    with pytest.raises(ForgedResult, match=r"\.result\.json added"):
        ev.evaluate_batch([agent(forger)], {**ARGS, "items": 20})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".result.json"]  # the agent's own folder is gone
    [honest] = ev.evaluate_batch([TASK.seed_files()], {**ARGS, "items": 20})  # same folder, honest agent
    assert honest["valid"] is True


def test_the_agent_cannot_reach_the_evaluator():
    """It runs in a fresh interpreter: none of the evaluator's modules, no way to patch its numpy."""
    spy = ("import sys, numpy as np\n"
           "seen = sorted(m for m in sys.modules if 'evaluate' in m or m.startswith('_pytest'))\n"
           "np.argmax = lambda a: len(a) - 1  # would make every choice the last bin, in-process\n"
           "def priority(item, bins):\n"
           "    if seen:\n"
           "        raise RuntimeError(str(seen))\n"
           "    return -(bins - item)\n")
    assert evaluate(spy)["fitness"] == evaluate(TASK.seed_files()["priority.py"].decode())["fitness"]


def test_the_agent_process_dying_mid_packing():
    result = evaluate("import os\n\ndef priority(item, bins):\n    os._exit(0)\n", items=10)
    assert re.match(r"^the agent's process died during priority\(\): it exited with status 0 \(on item 0 ",
                    result["feedback"]), result["feedback"]


def test_one_bad_agent_does_not_spoil_the_batch():
    seed = TASK.seed_files()
    results = ev.evaluate_batch([agent("def priority(:\n"), seed, agent("raise SystemExit\n")], {**ARGS, "items": 50})
    assert [r["valid"] for r in results] == [False, True, False]


def test_unknown_argument_is_an_evaluator_error():
    with pytest.raises(ValueError, match=r"unknown binpack argument\(s\) \['itmes'\]"):
        ev.evaluate_batch([TASK.seed_files()], {"itmes": 10})


# --- CLI --------------------------------------------------------------------------------------


def test_cli_on_folders(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "priority.py").write_bytes(TASK.seed_files()["priority.py"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "priority.py").write_text("def priority(item, bins):\n    return None\n")
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(BINPACK_DIR / "evaluate.py"), "--out", str(out), "--arg", "items=200",
         str(good), str(bad), str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert [r["valid"] for r in results] == [True, False, False]
    in_process = evaluate(TASK.seed_files()["priority.py"].decode(), items=200)
    assert results[0]["fitness"] == in_process["fitness"] and results[0]["descriptors"] == in_process["descriptors"]
    assert "returned shape ()" in results[1]["feedback"]
    assert results[2]["feedback"] == f"agent folder {tmp_path / 'absent'} does not exist"
