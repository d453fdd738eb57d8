"""A serving runner's compiled task modules: compiled once in the runner, taken by every evaluation it forks.

Standard library only (it runs inside the sandbox image, registered as ``sandboxes.precompiled`` by the runner's
bootstrap). ``compile`` parses a file and runs none of it, so the runner still runs no task code. A forked
evaluation imports a file from this code only when the file's bytes are the ones compiled; a file that does not
compile quietly is left to the evaluation, whose output then carries what Python says of it.
"""

import os

# Measured in a pool container: a maze evaluation's import of its evaluator took 7.4 ms of CPU compiling
# maze_sim.py and evaluate.py again in every fork (pathlib preloaded), 2.3 ms from the compiled code.
MAX_COMPILED_FILES = 64
MAX_COMPILED_BYTES = 1 << 20
compiled = {}  # path -> (source bytes, code object, (inode, size, mtime) of the file they were read from)


def _compile_one(path, data):
    """``data`` compiled as ``path``; None when compiling it raises or warns: the evaluation then compiles the
    file itself, so what Python says of it (a SyntaxError, a SyntaxWarning) reaches the evaluation's output."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = compile(data, path, "exec", dont_inherit=True)
        except Exception:  # noqa: BLE001 - SyntaxError, ValueError (NUL), RecursionError, MemoryError, ...
            return None
    return None if caught else code


def compile_task(task_dir):
    """Compile the task folder's top-level ``.py`` files into :data:`compiled`, where they changed; forget the
    rest. Never raises: a job whose task folder is missing or odd is run() to report."""
    if not isinstance(task_dir, str) or not task_dir:
        return
    try:
        entries = sorted((e for e in os.scandir(task_dir) if e.name.endswith(".py") and e.is_file()),
                         key=lambda e: e.name)[:MAX_COMPILED_FILES]
    except OSError:
        entries = []
    for path in set(compiled) - {e.path for e in entries}:  # another task, or a file gone
        del compiled[path]
    for entry in entries:
        try:
            st = entry.stat()
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if compiled.get(entry.path, (None, None, None))[2] == key:
                continue
            compiled.pop(entry.path, None)
            if st.st_size > MAX_COMPILED_BYTES:
                continue
            with open(entry.path, "rb") as fh:
                data = fh.read(MAX_COMPILED_BYTES + 1)
            code = None if len(data) > MAX_COMPILED_BYTES else _compile_one(entry.path, data)
            if code is not None:
                compiled[entry.path] = (data, code, key)
        except Exception:  # noqa: BLE001 - the evaluation imports the file the plain way
            compiled.pop(entry.path, None)


def use_compiled():
    """In the forked child: importing a file the runner compiled, with the same bytes, takes its code (the bytes
    are compared whatever the file's times say)."""
    if not compiled:
        return
    from importlib.machinery import SourceFileLoader

    compile_source = SourceFileLoader.source_to_code

    def source_to_code(self, data, path, *args, **kwargs):
        hit = compiled.get(path)
        if hit is not None and not args and kwargs.get("_optimize", -1) == -1 and hit[0] == data:
            return hit[1]
        return compile_source(self, data, path, *args, **kwargs)

    SourceFileLoader.source_to_code = source_to_code
