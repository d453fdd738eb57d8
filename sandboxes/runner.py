"""The in-sandbox runner: evaluate a batch of agents with a task's evaluate.py, under limits.

Standard library only: it runs inside the sandbox image (Debian's python3 and the host's numpy) and, for
the ``process`` sandbox, on the host. For every evaluation it forks a fresh child, in a
fresh work dir, that imports the task and runs ``evaluate_batch``; the runner itself never
imports untrusted code. It prints exactly one JSON line per evaluation on its stdout:

    {"results": [...] | null, "failure_kind": null | "timeout" | "oom" | "pids" |
     "output_limit" | "crash" | "no_result" | "bad_result" | "forged_result" | "sandbox_error",
     "reason": str | null, "exit_status": int | null, "seconds": float,
     "stdout_tail": str, "stderr_tail": str, "retire": str | null}

The evaluation hands its results back on a pipe of its own (fd 3), as one JSON document carrying
a token that only this evaluation was given; a second document, a wrong token, or a result file
written into the work dir (where the runner of old looked for it) is ``forged_result``. Agent code
must run through ``sandboxes.agent.run_agent`` (a fresh process, without that pipe or the token);
a ``ForgedResult`` it raises also ends here as ``forged_result``.

Usage:

- ``python3 runner.py JOB_DIR``: evaluate one job and exit (the ``process`` sandbox).
- ``python3 runner.py --serve``: the main process (PID 1) of every docker sandbox container.
  It reads job folders from stdin, one per line, until stdin closes (after one job in
  ``fresh`` mode), evaluates each in turn and adds ``"job": JOB_DIR`` to each report.
  Before each report it kills whatever the evaluation left running, removes its SysV IPC
  objects and empties the work root, /tmp, /dev/shm and /dev/mqueue (restoring write permission
  first); when anything survives that, or memory in use stays above the container's idle level,
  the report carries ``"retire"`` and the host replaces the container (``sandboxes/cleanup.py``).
  The host reads its stdout through the container's attach stream, which no child can reach:
  children get other pipes and /dev/null for stdin, the runner is non-dumpable, so its /proc
  fds and memory are closed to them, and as PID 1 it ignores their signals.

Both sandboxes start it as ``python3 -I -c SOURCE``, where SOURCE first registers the in-sandbox
modules of the ``sandboxes`` package (``cleanup``, and ``agent`` with its parts) from their text
(see ``openended.sandbox.jobdir.IN_SANDBOX_MODULES``): the image holds nothing of openended.

JOB_DIR holds ``job.json`` (``{"task_dir", "agents": [names], "agent_files": [{relative path: base64}],
"args", "timeout_s", "output_bytes", "work_root"}``, and ``"model_socket"`` when the evaluation may call a
model through the gateway: it becomes ``$OPENENDED_MODEL_SOCKET``). Each agent's files are in
``agent_files``, one mapping per agent, in the order of ``agents``; a job without ``agent_files`` has a
folder per agent instead, named as in ``agents``.
"""

import ctypes
import json
import os
import selectors
import signal
import sys
import tempfile
import time

from sandboxes import cleanup
from sandboxes.precompiled import compile_task, use_compiled
from sandboxes.reaper import remove_tree

TAIL = 4000
MAX_RESULT_BYTES = 8 * 1024 * 1024
MAX_RESULT_DEPTH = 100
RESULT_FD = 3  # the evaluation's end of its result pipe
OLD_RESULT_FILE = ".result.json"  # where the runner once read results: only a forger writes it now
EXIT_OK = 0
MAX_FD = 1 << 20
READ_CHUNK = 65536


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


def _agents(job, job_dir):
    """Every agent's files: from job.json itself (``agent_files``, base64), else from its folder in the job."""
    inline = job.get("agent_files")
    if inline is None:
        return [_read_agent(os.path.join(job_dir, a)) for a in job["agents"]]
    import binascii

    return [{rel: binascii.a2b_base64(data) for rel, data in files.items()} for files in inline]


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


def _detach_from_runner(out_w, err_w, res_w):
    """In the forked child: stdout/stderr to the runner's pipes, the result pipe at fd 3, stdin from
    /dev/null, no other fd.

    In ``--serve`` mode the runner's own stdin and stdout are the host's channel; the child
    must hold neither, or it could read the next job or write a report of its own."""
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(res_w, RESULT_FD)  # after the others: out_w or err_w may have been fd 3
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    _close_fds_from(RESULT_FD + 1)
    os.set_inheritable(RESULT_FD, False)  # a subprocess of the evaluation never gets it
    sys.stdin = open(0, closefd=False)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _send_result(document):
    try:
        data = json.dumps(document, allow_nan=True).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # the evaluator's value, not the runner's fault
        data = json.dumps({"token": document["token"], "unserializable": f"{type(exc).__name__}: {exc}"[:300]}).encode()
    while data:
        data = data[os.write(RESULT_FD, data):]
    os.close(RESULT_FD)


def _is_forgery(exc):
    """Whether ``exc`` is sandboxes.agent's ForgedResult (only imported if the evaluator uses it)."""
    forged = getattr(sys.modules.get("sandboxes.agent"), "ForgedResult", None)
    return forged is not None and isinstance(exc, forged)


def _child(job, job_dir, work, token):
    """In the forked child: import the task's evaluator, evaluate, send the results on fd 3."""
    os.chdir(work)
    os.environ.clear()
    os.environ.update({"HOME": work, "TMPDIR": work, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    if job.get("model_socket"):  # the model gateway (sandboxes.model; run_agent passes it on to agents)
        os.environ["OPENENDED_MODEL_SOCKET"] = str(job["model_socket"])
    sys.dont_write_bytecode = True
    task_dir = job["task_dir"]
    sys.path.insert(0, task_dir)
    import importlib.util

    use_compiled()
    try:
        spec = importlib.util.spec_from_file_location("task_evaluate", os.path.join(task_dir, "evaluate.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        genomes = _agents(job, job_dir)
        results = module.evaluate_batch(genomes, job.get("args") or {})
    except BaseException as exc:
        if not _is_forgery(exc):
            raise
        _send_result({"token": token, "forged": str(exc)[:500]})
        return
    _send_result({"token": token, "results": results})


def _report_failure(exc):
    """The child's last words on stderr; the plain line first in case the traceback cannot be
    printed (no file descriptor left to read the source with, no memory)."""
    line = f"{type(exc).__name__}: {exc}"[:1000]
    try:
        import traceback

        text = "".join(traceback.format_exception(exc))
    except BaseException:  # noqa: BLE001 - the plain line is enough
        text = ""
    if not text.rstrip().endswith(line.rstrip()):
        text += line + "\n"
    try:
        os.write(2, text.encode("utf-8", "replace")[-8000:])
    except OSError:
        pass


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


def _depth(value):
    """How deeply ``value`` nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_RESULT_DEPTH:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _read_results(data, token, count):
    """(results, kind, reason) from what the evaluation sent on its result pipe."""
    if not data:
        return None, "no_result", "the evaluation exited without sending a result"
    text = data.decode("utf-8", "replace")
    try:
        document, end = json.JSONDecoder().raw_decode(text)
    except RecursionError:
        return None, "bad_result", "result is nested too deeply to read"
    except ValueError as exc:
        return None, "bad_result", f"result is not valid JSON: {exc}"
    if text[end:].strip():
        return None, "forged_result", "more than one result was sent on the evaluation's channel"
    if not isinstance(document, dict) or document.get("token") != token:
        return None, "forged_result", "the result on the evaluation's channel does not carry its token"
    if "unserializable" in document:
        return None, "bad_result", f"evaluate_batch returned a value JSON cannot hold: {document['unserializable']}"
    if "forged" in document:
        return None, "forged_result", f"an agent tampered with its evaluation: {str(document['forged'])[:500]}"
    results = document.get("results")
    if _depth(results) > MAX_RESULT_DEPTH:
        return None, "bad_result", f"result is nested deeper than {MAX_RESULT_DEPTH} levels"
    if not isinstance(results, list) or len(results) != count:
        return None, "bad_result", (
            f"evaluate_batch returned {type(results).__name__} "
            f"{'of length ' + str(len(results)) if isinstance(results, list) else ''} for {count} agent(s)")
    return results, None, None


def _fork_evaluation(job, job_dir, work, token, out_w, err_w, res_w):
    """Fork the evaluation: a fresh process in its own process group; its pid."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setpgid(0, 0)
        _detach_from_runner(out_w, err_w, res_w)
        _child(job, job_dir, work, token)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    except SystemExit as exc:  # the evaluation may exit on purpose; keep its status
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    except BaseException as exc:  # noqa: BLE001 - report any failure of the evaluation on stderr
        try:
            _report_failure(exc)
        finally:
            os._exit(1)


def run(job_dir, job=None):
    """Evaluate the job in ``job_dir`` in a fresh child; the report (a dict, see the module docstring)."""
    started = time.monotonic()
    job = load_job(job_dir) if job is None else job
    timeout = float(job.get("timeout_s", 60))
    cap = int(job.get("output_bytes", 1000000))
    token = os.urandom(16).hex()
    work = tempfile.mkdtemp(prefix="eval-", dir=job.get("work_root") or None)
    oom_before, pids_before = _oom_count(), _pids_max_hits()
    pipes = [os.pipe() for _ in range(3)]
    (out_r, out_w), (err_r, err_w), (res_r, res_w) = pipes
    sel = selectors.DefaultSelector()
    try:
        pid = _fork_evaluation(job, job_dir, work, token, out_w, err_w, res_w)
        for fd in (out_w, err_w, res_w):
            os.close(fd)
        pipes = [(r, None) for r, _ in pipes]
        kind, reason, status, tails, result = _watch(pid, sel, out_r, err_r, res_r, started + timeout, timeout, cap)
        exit_status = os.waitstatus_to_exitcode(status)
        kind, reason = _explain(kind, reason, exit_status, tails[err_r], oom_before, pids_before)
        results = None
        if kind is None and os.path.lexists(os.path.join(work, OLD_RESULT_FILE)):
            kind, reason = "forged_result", (f"a result file ({OLD_RESULT_FILE}) was written into the work dir; "
                                             "results travel only on the evaluation's own channel")
        if kind is None:
            results, kind, reason = _read_results(bytes(result), token, len(job["agents"]))
        return {
            "results": results if kind is None else None,
            "failure_kind": kind,
            "reason": reason,
            "exit_status": exit_status,
            "seconds": time.monotonic() - started,
            "stdout_tail": tails[out_r].decode("utf-8", "replace"),
            "stderr_tail": tails[err_r].decode("utf-8", "replace"),
        }
    finally:  # a serving runner lives for many evaluations: no fd, no folder may leak, whatever happened
        sel.close()
        for pair in pipes:
            for fd in pair:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        remove_tree(work)


def _watch(pid, sel, out_r, err_r, res_r, deadline, timeout, cap):
    """Read the child's pipes until it is done, killed past ``deadline``, or over a cap.
    Returns (kind, reason, wait status, {fd: tail}, result bytes)."""
    tails = {out_r: b"", err_r: b""}
    counts = {out_r: 0, err_r: 0}
    result = bytearray()
    kind = reason = None
    for fd in (out_r, err_r, res_r):
        sel.register(fd, selectors.EVENT_READ)
    open_fds = 3
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
            chunk = os.read(key.fd, READ_CHUNK)
            if not chunk:
                sel.unregister(key.fd)
                open_fds -= 1
                continue
            if key.fd == res_r:
                result += chunk
                if len(result) > MAX_RESULT_BYTES:
                    kind, reason = "bad_result", f"result is over {MAX_RESULT_BYTES} bytes; killed"
                    break
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
    return kind, reason, status, tails, result


def _explain(kind, reason, exit_status, stderr_tail, oom_before, pids_before):
    """The failure kind and reason, from what was seen, the exit status and the cgroup's counters."""
    oom_after, pids_after = _oom_count(), _pids_max_hits()
    oom_hit = None not in (oom_before, oom_after) and oom_after > oom_before
    pids_hit = None not in (pids_before, pids_after) and pids_after > pids_before
    # The limits explain a timeout or a crash better than the symptom does (a fork bomb spins until killed).
    if kind in (None, "timeout") and oom_hit:
        return "oom", "out of memory: killed by the kernel at the memory limit"
    if kind in (None, "timeout") and pids_hit and exit_status != 0:
        return "pids", f"hit the process limit (fork refused {pids_after - pids_before} times)"
    if kind is not None:
        return kind, reason
    err = stderr_tail.decode("utf-8", "replace")
    if exit_status == -signal.SIGKILL:
        return "oom", "killed by SIGKILL (most likely the memory limit)"
    if exit_status != 0 and "MemoryError" in err[-300:]:
        return "oom", "out of memory: MemoryError at the memory limit"
    if exit_status != 0:
        last = err.strip().splitlines()
        detail = last[-1] if last else "no error output"
        return "crash", f"evaluation exited with status {exit_status}: {detail}"
    return None, None


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


def _failed(reason):
    return {"results": None, "failure_kind": "sandbox_error", "reason": reason, "exit_status": None,
            "seconds": 0.0, "stdout_tail": "", "stderr_tail": ""}


def serve():
    """Evaluate the job folders named on stdin until it closes; one report line each (``--serve``)."""
    # As PID 1 a signal with no handler is dropped, so a child cannot interrupt the runner with SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    import importlib.util  # noqa: F401 - once here rather than in every child

    stdin = sys.stdin.buffer
    idle = cleanup.Idle()
    while True:
        line = stdin.readline()
        if not line:
            return
        job_dir = line.decode("utf-8", "replace").strip()
        work_root = None
        try:
            job = load_job(job_dir)
            work_root = job.get("work_root")
            compile_task(job.get("task_dir"))
            report = run(job_dir, job)
        except Exception as exc:  # noqa: BLE001 - a broken job must not end the runner
            report = _failed(f"runner: {type(exc).__name__}: {exc}")
        if os.getpid() == 1:  # a container's main process: nothing of this evaluation reaches the next
            _kill_leftovers()
            report["retire"] = cleanup.clean_up(work_root, idle)
        report["job"] = job_dir
        _emit(report)


def main(argv):
    _not_dumpable()
    if argv[1:] == ["--serve"]:
        serve()
    else:
        _emit(run(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
