"""A serving runner compiles the task folder's modules once and every evaluation forked from it takes that code
for a file whose bytes are unchanged (sandboxes/precompiled.py ``compile_task``, ``use_compiled``). Each case runs in
a subprocess of its own: taking the compiled code patches the import machinery of the process that does it, as
each forked evaluation does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    from sandboxes import precompiled as runner
    task = sys.argv[1]
    report = {}
    runner.compile_task(task)
    report["compiled"] = sorted(p.rsplit("/", 1)[-1] for p in runner.compiled)
    runner.use_compiled()
    sys.path.insert(0, task)
    import helper
    cached = runner.compiled[task + "/helper.py"][1]
    # identity, not equality: code objects compare by content, so a fresh compile of the same bytes is equal
    same = lambda code, consts: any(c is code for c in consts)
    report["from_cache"] = same(helper.value.__code__, cached.co_consts)
    report["value"] = helper.value()
    # the file changes under the runner: an import reads the new bytes, which the cache does not hold
    with open(task + "/helper.py", "w") as fh:
        fh.write("def value():\\n    return 2\\n")
    helper = importlib.reload(helper)
    report["changed_value"] = helper.value()
    report["changed_from_cache"] = same(helper.value.__code__, runner.compiled[task + "/helper.py"][1].co_consts)
    runner.compile_task(task)  # the next job compiles the new bytes
    helper = importlib.reload(helper)
    report["recompiled_from_cache"] = same(helper.value.__code__, runner.compiled[task + "/helper.py"][1].co_consts)
    report["recompiled_value"] = helper.value()
    try:
        import broken
    except SyntaxError as exc:
        report["broken"] = f"{exc.filename.rsplit('/', 1)[-1]}:{exc.lineno}"
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import warns
    report["warnings"] = [f"{w.category.__name__}:{w.filename.rsplit('/', 1)[-1]}" for w in caught]
    print(json.dumps(report))
""")


def _run(task: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(task)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_an_unchanged_module_comes_from_the_runners_compiled_code_and_a_changed_one_is_read_again(tmp_path):
    (tmp_path / "helper.py").write_text("def value():\n    return 1\n")
    (tmp_path / "broken.py").write_text("def value(:\n")
    (tmp_path / "notes.txt").write_text("not python")
    (tmp_path / "big.py").write_text("x = 1\n" + "#" * (1 << 20))
    (tmp_path / "warns.py").write_text("x = 1 is 1\n")  # compiles, with a SyntaxWarning
    (tmp_path / "folder.py").mkdir()
    report = _run(tmp_path)
    assert report["compiled"] == ["helper.py"], "only top-level .py files that compile quietly, each up to 1 MiB"
    assert report["from_cache"] is True and report["value"] == 1
    assert report["changed_value"] == 2 and report["changed_from_cache"] is False
    assert report["recompiled_from_cache"] is True and report["recompiled_value"] == 2
    # a file that does not compile, or warns, is left to the evaluation, which reports it as Python would
    assert report["broken"] == "broken.py:1"
    assert report["warnings"] == ["SyntaxWarning:warns.py"]


def test_a_job_without_a_task_folder_compiles_nothing_and_another_task_forgets_the_first(tmp_path):
    from sandboxes import precompiled as runner

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.py").write_text("x = 1\n")
    runner.compile_task(str(tmp_path / "a"))
    assert list(runner.compiled) == [str(tmp_path / "a" / "one.py")]
    runner.compile_task(None)  # no task folder: left for run() to report
    assert list(runner.compiled) == [str(tmp_path / "a" / "one.py")]
    runner.compile_task(str(tmp_path / "a" / "one.py"))  # a file, not a folder
    runner.compile_task(str(tmp_path / "missing"))
    assert runner.compiled == {}
