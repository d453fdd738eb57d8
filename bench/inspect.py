"""Inspection benchmark entry point (the code is in inspect_bench.py):

    python bench/inspect.py --out inspect.json

writes ``max_command_seconds_at_100000``: the slowest of status, top, show, lineage, diff and tree
on a 100,000-agent database (target < 1 s).

This file's name is also the standard library's ``inspect``, and ``python bench/<script>.py``
puts bench/ first on ``sys.path``: any import of ``inspect`` from such a script (numpy and
dataclasses do it) would land here. So, imported as a module, this file hands over the real
standard-library module; run as a script, it takes bench/ off the front of ``sys.path`` before
importing anything else.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ != "__main__":
    import importlib.machinery
    import importlib.util

    _spec = importlib.machinery.PathFinder.find_spec(
        "inspect", [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE])
    _real = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _real  # the import machinery returns what sys.modules holds after this runs
    _spec.loader.exec_module(_real)
else:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]
    from inspect_bench import main

    sys.exit(main())
