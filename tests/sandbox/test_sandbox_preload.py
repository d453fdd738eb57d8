"""A serving runner imports numpy once and forks every evaluation from it (openended/sandbox/jobdir.py's
preload), and compiles the task's modules once (sandboxes/runner.py): evaluations inherit the import and the
compiled code but nothing else of each other, and the process sandbox, which starts a runner per evaluation,
is unchanged. The image's numpy is the host's."""

from __future__ import annotations

import json
import textwrap

from conftest import ROOT, containers_left

from openended.sandbox import Limits, SandboxSpec
from openended.sandbox.docker_sandbox import DockerSandbox
from openended.sandbox.jobdir import runner_source
from openended.sandbox.process import ProcessSandbox

HOSTILE = ROOT / "tests" / "tasks" / "hostile"

# What an evaluation sees before it imports anything itself: numpy loaded already or not, its process's
# threads, its container, its environment's names, and a draw from numpy's global generator (never seeded
# by the child).
PROBE = {"child.py": textwrap.dedent("""
    def run():
        import json, os, socket, sys
        preloaded = 'numpy' in sys.modules
        import numpy
        seen = {'preloaded': preloaded, 'threads': len(os.listdir('/proc/self/task')), 'host': socket.gethostname(),
                'env': sorted(os.environ), 'draw': float(numpy.random.random()), 'numpy': numpy.__version__,
                'compiled': sorted(sys.modules['sandboxes.precompiled'].compiled),
                'evaluator_compiled': '/task/evaluate.py' in sys.modules['sandboxes.precompiled'].compiled}
        return {'fitness': 0.0, 'descriptors': [0, 0], 'feedback': json.dumps(seen)}
    """).encode()}


def _probe(box) -> dict:
    out = box.evaluate([PROBE], {})
    assert out.failure_kind is None, out.reason
    return json.loads(out.results[0]["feedback"])


def test_pool_evaluations_inherit_numpy_but_not_its_random_state(docker_engine):
    label = "test-preload"
    spec = SandboxSpec(kind="docker", mode="pool", campaign_label=label, pool_max_evaluations=10,
                       limits=Limits(timeout_s=10, memory_mb=256, pids=32))
    box = DockerSandbox(spec, str(HOSTILE))
    try:
        seen = [_probe(box) for _ in range(3)]
    finally:
        box.close()
    assert containers_left(label) == []
    assert all(s["preloaded"] for s in seen), "forked from a runner that imported numpy"
    assert len({s["draw"] for s in seen}) == 3, "numpy's global generator is re-seeded in every evaluation"
    # the thread caps set for the import are gone again; the evaluation's environment is what it was
    assert all(s["env"] == ["HOME", "PATH", "PYTHONDONTWRITEBYTECODE", "TMPDIR"] for s in seen)
    assert all(s["threads"] == 1 for s in seen)
    assert len({s["host"] for s in seen}) == 1, "the runner's larger idle memory does not retire its container"
    import numpy

    assert all(s["numpy"] == numpy.__version__ for s in seen), "the image carries the host's numpy"
    assert all(s["evaluator_compiled"] for s in seen), "the task's evaluate.py was compiled by the runner"


def test_a_runner_of_one_job_preloads_nothing(tmp_path):
    box = ProcessSandbox(SandboxSpec(kind="process", limits=Limits(timeout_s=20, memory_mb=1024)), str(HOSTILE))
    try:
        seen = _probe(box)
    finally:
        box.close()
    assert seen["preloaded"] is False
    assert seen["compiled"] == [], "a runner of one job compiles nothing ahead"
    assert "--serve" in runner_source(), "the preload is keyed on the serving runner's flag"
