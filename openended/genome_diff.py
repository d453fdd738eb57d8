"""Unified diffs between two genomes (file trees): what ``openended diff`` shows.

Pure: takes the files, returns text. Text files diff line by line (``\\ No newline at end of
file`` as git writes it), ``.npy`` arrays one value per line under a shape/dtype header, other
binary files as ``Binary files ... differ``.
"""

from __future__ import annotations

import difflib
import io

from openended.names import Files

__all__ = ["genome_diff", "npy_lines"]


def _is_text(data: bytes) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def npy_lines(data: bytes) -> list[str] | None:
    try:
        import numpy as np

        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # noqa: BLE001 - anything numpy cannot read is shown as bytes instead
        return None
    lines = [f"# shape {tuple(arr.shape)} dtype {arr.dtype}\n"]
    lines.extend(f"{x!r}\n" for x in arr.ravel().tolist())
    return lines


def _file_diff(path: str, old: bytes | None, new: bytes | None, la: str, lb: str) -> list[str]:
    if old == new:
        return []
    fa = f"a/{path}" if old is not None else "/dev/null"
    fb = f"b/{path}" if new is not None else "/dev/null"
    header_a, header_b = f"{fa}\t({la})", f"{fb}\t({lb})"
    if path.endswith(".npy"):
        oa = npy_lines(old) if old is not None else []
        ob = npy_lines(new) if new is not None else []
        if oa is not None and ob is not None:
            return list(difflib.unified_diff(oa, ob, header_a, header_b))
    ta = _is_text(old) if old is not None else ""
    tb = _is_text(new) if new is not None else ""
    if ta is None or tb is None:
        return [f"Binary files {fa} and {fb} differ\n"]
    out = []
    for line in difflib.unified_diff(ta.splitlines(keepends=True), tb.splitlines(keepends=True), header_a, header_b):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return out


def genome_diff(old: Files | None, new: Files, label_old: str, label_new: str) -> str:
    """Unified diff from ``old`` to ``new`` (``old`` None: from an empty tree), files in path
    order; the labels name each side in the ``---``/``+++`` headers (e.g. ``agent 3``)."""
    before = old or {}
    out: list[str] = []
    for path in sorted(before.keys() | new.keys()):
        out.extend(_file_diff(path, before.get(path), new.get(path), label_old, label_new))
    return "".join(out)
