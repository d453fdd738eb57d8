"""The in-sandbox runner: evaluate a batch of agents with a task's evaluate.py, under limits.

Standard library only: it runs inside the sandbox image (Debian's python3 + numpy) and, for
the ``process`` sandbox, on the host. For every evaluation it forks a fresh child, in a
fresh work dir, that imports the task and runs ``evaluate_batch``; the runner itself never
imports untrusted code. It prints exactly one JSON line per evaluation on its stdout:

    {"results": [...] | null, "failure_kind": null | "timeout" | "oom" | "pids" |
     "output_limit" | "crash" | "no_result" | "bad_result" | "sandbox_error",
     "reason": str | null, "exit_status": int | null, "seconds": float,
     "stdout_tail": str, "stderr_tail": str}

Usage:

- ``python3 runner.py JOB_DIR``: evaluate one job and exit (the ``process`` sandbox).
- ``python3 runner.py --serve``: the main process (PID 1) of every docker sandbox container.
  It reads job folders from stdin, one per line, until stdin closes (after one job in
  ``fresh`` mode), evaluates each in turn and adds ``"job": JOB_DIR`` to each report.
  Between jobs it kills whatever an evaluation left running and empties /tmp and the work
  root. The host reads its stdout through the container's attach stream, which no child can
  reach: children get other pipes and /dev/null for stdin, the runner is non-dumpable, so
  its /proc fds and memory are closed to them, and as PID 1 it ignores their signals.

JOB_DIR holds ``job.json`` (``{"task_dir", "agents": [relative dirs], "args", "timeout_s",
"output_bytes", "work_root"}``) and one folder per agent.
"""

import ctypes
import json
import os
import selectors
import shutil
import signal
import sys
import tempfile
import time

TAIL = 4000
MAX_RESULT_BYTES = 8 * 1024 * 1024
EXIT_OK = 0
MAX_FD = 1 << 20


def _not_dumpable():
    # The child runs as the same user: without this it could read or write the runner's
    # memory and file descriptors through /proc and forge the runner's report.
    try:
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _read_agent(folder):
    files = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                files[os.path.relpath(path, folder).replace(os.sep, "/")] = fh.read()
    return files


def _close_fds_from(first):
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (macOS)
        fds = range(first, min(os.sysconf("SC_OPEN_MAX"), MAX_FD))
    for fd in fds:
        if fd >= first:
            try:
                os.close(fd)
            except OSError:
                pass


def _detach_from_runner(out_w, err_w):
    """In the forked child: stdout/stderr to the runner's pipes, stdin from /dev/null, no other fd.

    In ``--serve`` mode the runner's own stdin and stdout are the host's channel; the child
    must hold neither, or it could read the next job or write a report of its own."""
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    _close_fds_from(3)
    sys.stdin = open(0, closefd=False)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _child(job, job_dir, work, out_path):
    """In the forked child: import the task's evaluator, evaluate, write the results file."""
    os.chdir(work)
    os.environ.clear()
    os.environ.update({"HOME": work, "TMPDIR": work, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    sys.dont_write_bytecode = True
    task_dir = job["task_dir"]
    sys.path.insert(0, task_dir)
    import importlib.util

    spec = importlib.util.spec_from_file_location("task_evaluate", os.path.join(task_dir, "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    genomes = [_read_agent(os.path.join(job_dir, a)) for a in job["agents"]]
    results = module.evaluate_batch(genomes, job.get("args") or {})
    with open(out_path, "w") as fh:
        json.dump(results, fh, allow_nan=True)


def _cgroup_counter(keys, *paths):
    """The first of ``keys`` found in the first readable cgroup file of ``paths`` (v1, then v2), or None."""
    for path in paths:
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key in keys:
                return int(value)
        return None
    return None


def _oom_count():
    return _cgroup_counter(("oom_kill", "oom"), "/sys/fs/cgroup/memory/memory.oom_control",
                           "/sys/fs/cgroup/memory.events")


def _pids_max_hits():
    return _cgroup_counter(("max",), "/sys/fs/cgroup/pids/pids.events", "/sys/fs/cgroup/pids.events")


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def load_job(job_dir):
    with open(os.path.join(job_dir, "job.json")) as fh:
        return json.load(fh)


def run(job_dir, job=None):
    """Evaluate the job in ``job_dir`` in a fresh child; the report (a dict, see the module docstring)."""
    started = time.monotonic()
    job = load_job(job_dir) if job is None else job
    timeout = float(job.get("timeout_s", 60))
    cap = int(job.get("output_bytes", 1000000))
    work = tempfile.mkdtemp(prefix="eval-", dir=job.get("work_root") or None)
    out_path = os.path.join(work, ".result.json")
    oom_before, pids_before = _oom_count(), _pids_max_hits()

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the evaluation: a fresh process in its own process group
        try:
            os.setpgid(0, 0)
            _detach_from_runner(out_w, err_w)
            _child(job, job_dir, work, out_path)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_OK)
        except SystemExit as exc:  # the evaluation may exit on purpose; keep its status
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException:  # noqa: BLE001 - report any failure of the evaluation on stderr
            try:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(1)
    os.close(out_w)
    os.close(err_w)

    tails = {out_r: b"", err_r: b""}
    counts = {out_r: 0, err_r: 0}
    kind = reason = None
    sel = selectors.DefaultSelector()
    for fd in (out_r, err_r):
        sel.register(fd, selectors.EVENT_READ)
    deadline = started + timeout
    open_fds = 2
    status = None
    settle = None  # once the child has exited: when to stop reading pipes that its leftovers hold open
    while open_fds:
        now = time.monotonic()
        if now >= deadline:
            kind, reason = "timeout", f"no result within {timeout:g}s (wall clock); killed"
            break
        if settle is not None and now >= settle:
            break
        events = sel.select(timeout=min(deadline - now, 0.5 if settle is None else settle - now))
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                _kill_group(pid)
                _kill_leftovers()  # as a container's PID 1: also what it started outside its group
                settle = time.monotonic() + 0.5
        for key, _ in events:
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fd)
                open_fds -= 1
                continue
            counts[key.fd] += len(chunk)
            tails[key.fd] = (tails[key.fd] + chunk)[-TAIL:]
            if counts[key.fd] > cap:
                name = "stdout" if key.fd == out_r else "stderr"
                kind, reason = "output_limit", f"wrote more than {cap} bytes to {name}; killed"
                break
        if kind:
            break
    if kind:
        _kill_group(pid)
    # Wait for the child: its pipes may have closed before it exited.
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.monotonic() > deadline + 1:
            _kill_group(pid)
            if not kind:
                kind, reason = "timeout", f"no result within {timeout:g}s (wall clock); killed"
        time.sleep(0.002)
    _kill_group(pid)  # grandchildren it left behind
    exit_status = os.waitstatus_to_exitcode(status)

    results = None
    oom_after, pids_after = _oom_count(), _pids_max_hits()
    oom_hit = None not in (oom_before, oom_after) and oom_after > oom_before
    pids_hit = None not in (pids_before, pids_after) and pids_after > pids_before
    # The limits explain a timeout or a crash better than the symptom does (a fork bomb spins until killed).
    if kind in (None, "timeout") and oom_hit:
        kind, reason = "oom", "out of memory: killed by the kernel at the memory limit"
    elif kind in (None, "timeout") and pids_hit and exit_status != 0:
        kind, reason = "pids", f"hit the process limit (fork refused {pids_after - pids_before} times)"
    if kind is None:
        if exit_status == -signal.SIGKILL:
            kind, reason = "oom", "killed by SIGKILL (most likely the memory limit)"
        elif exit_status != 0 and "MemoryError" in tails[err_r].decode("utf-8", "replace")[-300:]:
            kind, reason = "oom", "out of memory: MemoryError at the memory limit"
        elif exit_status != 0:
            last = tails[err_r].decode("utf-8", "replace").strip().splitlines()
            detail = last[-1] if last else "no error output"
            kind, reason = "crash", f"evaluation exited with status {exit_status}: {detail}"
        elif not os.path.exists(out_path):
            kind, reason = "no_result", "the evaluation exited without writing a result"
        else:
            size = os.path.getsize(out_path)
            if size > MAX_RESULT_BYTES:
                kind, reason = "bad_result", f"result is {size} bytes (limit {MAX_RESULT_BYTES})"
            else:
                try:
                    with open(out_path) as fh:
                        results = json.load(fh)
                except ValueError as exc:
                    kind, reason = "bad_result", f"result is not valid JSON: {exc}"
                if results is not None and (not isinstance(results, list) or len(results) != len(job["agents"])):
                    kind, reason = "bad_result", (
                        f"evaluate_batch returned {type(results).__name__} "
                        f"{'of length ' + str(len(results)) if isinstance(results, list) else ''} "
                        f"for {len(job['agents'])} agent(s)")
                    results = None
    shutil.rmtree(work, ignore_errors=True)
    sel.close()
    for fd in (out_r, err_r):  # a serving runner lives for many evaluations: no fd may leak
        os.close(fd)
    return {
        "results": results if kind is None else None,
        "failure_kind": kind,
        "reason": reason,
        "exit_status": exit_status,
        "seconds": time.monotonic() - started,
        "stdout_tail": tails[out_r].decode("utf-8", "replace"),
        "stderr_tail": tails[err_r].decode("utf-8", "replace"),
    }


def _emit(report):
    data = (json.dumps(report) + "\n").encode()
    while data:  # os.write, not sys.stdout: one unbuffered line per report, whatever its size
        data = data[os.write(1, data):]


def _kill_leftovers():
    """Kill and reap every other process in the container (an evaluation's daemons included).

    Only as PID 1, the init of the container's own pid namespace: there kill(-1) reaches
    exactly the container's processes, and every orphan is re-parented to us to be reaped."""
    if os.getpid() != 1:
        return
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # again on every turn: a process may have forked meanwhile
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _empty(folder):
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _failed(reason):
    return {"results": None, "failure_kind": "sandbox_error", "reason": reason, "exit_status": None,
            "seconds": 0.0, "stdout_tail": "", "stderr_tail": ""}


def serve():
    """Evaluate the job folders named on stdin until it closes; one report line each (``--serve``)."""
    # As PID 1 a signal with no handler is dropped, so a child cannot interrupt the runner with SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    import importlib.util  # noqa: F401 - once here rather than in every child

    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        job_dir = line.decode("utf-8", "replace").strip()
        work_root = None
        try:
            job = load_job(job_dir)
            work_root = job.get("work_root")
            report = run(job_dir, job)
        except Exception as exc:  # noqa: BLE001 - a broken job must not end the runner
            report = _failed(f"runner: {type(exc).__name__}: {exc}")
        report["job"] = job_dir
        _emit(report)
        if os.getpid() == 1:  # a container's main process: nothing of this evaluation reaches the next
            _kill_leftovers()
            for folder in (work_root, "/tmp"):
                if folder:
                    _empty(folder)


def main(argv):
    _not_dumpable()
    if argv[1:] == ["--serve"]:
        serve()
    else:
        _emit(run(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
