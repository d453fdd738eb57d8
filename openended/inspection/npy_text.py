"""A git textconv driver: a ``.npy`` file as text, one value per line, as ``openended diff`` shows it.

    python -m openended.inspection.npy_text FILE

:func:`~openended.inspection.gitexport.export_git` sets it for ``*.npy`` in the repositories it
writes, so ``git diff`` between two agents shows the changed values. A file that is not a valid
array is written out unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

from openended.genome_diff import npy_lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m openended.inspection.npy_text FILE", file=sys.stderr)
        return 2
    data = Path(argv[0]).read_bytes()
    lines = npy_lines(data)
    sys.stdout.buffer.write(data if lines is None else "".join(lines).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
