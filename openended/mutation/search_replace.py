"""SEARCH/REPLACE edit blocks (the aider / OpenEvolve format): parse them from a model's response
and apply them to a file's text.

A block::

    priority.py                 <- optional file name line (a genome path: not ../x.py, not /etc/x.py)
    <<<<<<< SEARCH
    lines copied from the file
    =======
    the lines to put in their place
    >>>>>>> REPLACE

Markers tolerate a wrong number of marker characters (three or more), missing spaces and any
letter case; code fences around a block or inside its sections are dropped, and a closing fence
ends a block whose ``>>>>>>> REPLACE`` line is missing. Matching is exact
first, then tolerant of whitespace (trailing whitespace, blank lines, a uniform indentation shift,
in which case the replacement is re-indented by the same shift). Every failure is a
:class:`PatchError` whose reason says what to do differently, because it is fed back to the model.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from openended.names import genome_path_problem

_SEARCH = re.compile(r"^\s*<{3,}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={3,}\s*$")
_REPLACE = re.compile(r"^\s*>{3,}\s*REPLACE\b.*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```")
_FILENAME = re.compile(r"^\s*[`*#\s]*([\w./-]+\.\w+)[`*:\s]*$")

NO_BLOCK = "no SEARCH/REPLACE block found in the response"
NO_CHANGE = "the edit changed nothing"


class PatchError(ValueError):
    """An edit cannot be parsed or applied; ``reason`` is a sentence a model can act on."""

    def __init__(self, reason: str, *, cut_off: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.cut_off = cut_off  # a block still open where the response ends: the answer was cut off


@dataclass(frozen=True, slots=True)
class Block:
    """One parsed edit: ``search`` and ``replace`` are lists of lines without line endings."""

    index: int  # 1-based position in the response, used in error messages
    search: tuple[str, ...]
    replace: tuple[str, ...]
    filename: str | None = None


def _strip_fences(lines: list[str]) -> list[str]:
    """Drop code-fence lines at either end of a section (a fence inside code is never valid Python)."""
    while lines and _FENCE.match(lines[0]):
        lines = lines[1:]
    while lines and _FENCE.match(lines[-1]):
        lines = lines[:-1]
    return lines


def _filename_before(lines: list[str], marker: int) -> str | None:
    """The file name written on the nearest non-fence, non-blank line above a SEARCH marker, if any."""
    i = marker - 1
    while i >= 0 and (not lines[i].strip() or _FENCE.match(lines[i])):
        i -= 1
    if i < 0:
        return None
    m = _FILENAME.match(lines[i])
    return m.group(1) if m else None


def parse_blocks(response: str, max_blocks: int | None = None) -> list[Block]:
    """Every SEARCH/REPLACE block in ``response``, in order, or only the first ``max_blocks``.

    Text outside blocks (prose, fences, a trailing partial sentence) is ignored, and so is
    everything after the ``max_blocks``-th block: like a stop sequence, for prompts that ask for a
    fixed number of edits from a model that goes on writing.

    Raises:
        PatchError: no block at all, a block without its ``=======`` divider or its
            ``>>>>>>> REPLACE`` marker (``cut_off`` when the response ends inside the block), or a
            block whose file name line names no genome path
            (:func:`~openended.names.genome_path_problem`: ``../evil.py``, ``/etc/x.py``); the reason
            names the block by its 1-based number.
    """
    lines = response.replace("\r\n", "\n").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines) and (max_blocks is None or len(blocks) < max_blocks):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        n = len(blocks) + 1
        filename = _filename_before(lines, i)
        problem = None if filename is None else genome_path_problem(filename)
        if problem is not None:
            raise PatchError(f"block {n}: {problem}; name a file of the program, or none")
        start = i + 1
        j = start
        while j < len(lines) and not (_DIVIDER.match(lines[j]) or _SEARCH.match(lines[j]) or _REPLACE.match(lines[j])):
            j += 1
        if j == len(lines) or _SEARCH.match(lines[j]):
            raise PatchError(f"block {n}: unterminated (no ======= line after <<<<<<< SEARCH)",
                             cut_off=j == len(lines))
        if _REPLACE.match(lines[j]):
            raise PatchError(f"block {n}: no ======= line between <<<<<<< SEARCH and >>>>>>> REPLACE")
        search = lines[start:j]
        k = j + 1
        while k < len(lines) and not (_REPLACE.match(lines[k]) or _SEARCH.match(lines[k]) or _DIVIDER.match(lines[k])):
            k += 1
        if k == len(lines) or not _REPLACE.match(lines[k]):
            # No REPLACE marker: a closing code fence still ends the replacement unambiguously
            # (a fence is never Python), so only a block with neither is unterminated.
            fence = next((f for f in range(j + 1, k) if _FENCE.match(lines[f])), None)
            if fence is None:
                if k == len(lines):
                    raise PatchError(f"block {n}: unterminated (no >>>>>>> REPLACE)", cut_off=True)
                raise PatchError(
                    f"block {n}: unterminated (no >>>>>>> REPLACE before the next marker line {lines[k].strip()!r})"
                )
            k = fence
        replace = lines[j + 1:k]
        blocks.append(Block(n, tuple(_strip_fences(search)), tuple(_strip_fences(replace)), filename))
        i = k + 1
    if not blocks:
        raise PatchError(NO_BLOCK)
    return blocks


# --- matching ---------------------------------------------------------------------------------


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _exact_matches(text: list[str], search: list[str]) -> list[tuple[int, int, int]]:
    """(start, end, indent shift 0) of every window of ``text`` equal to ``search`` line by line."""
    n = len(search)
    return [(i, i + n, 0) for i in range(len(text) - n + 1) if text[i:i + n] == search]


def _loose_matches(text: list[str], search: list[str]) -> list[tuple[int, int, int]]:
    """Windows equal to ``search`` up to trailing whitespace, blank lines and one indentation shift.

    Returns (start, end, shift) per match: ``text[start:end]`` spans the first to the last
    matched non-blank line, and shift is how many columns the file is indented more than the
    SEARCH text (negative when less).
    """
    wanted = [line.rstrip() for line in search if line.strip()]
    if not wanted:
        return []
    content = [(i, line.rstrip()) for i, line in enumerate(text) if line.strip()]
    first = wanted[0].strip()
    matches = []
    for pos in range(len(content) - len(wanted) + 1):
        if content[pos][1].strip() != first:
            continue
        window = content[pos:pos + len(wanted)]
        shift = len(_indent(window[0][1])) - len(_indent(wanted[0]))
        if all(
            got.strip() == want.strip() and len(_indent(got)) - len(_indent(want)) == shift
            for (_, got), want in zip(window, wanted, strict=True)
        ):
            matches.append((window[0][0], window[-1][0] + 1, shift))
    return matches


def _reindent(lines: tuple[str, ...], shift: int, pad: str) -> list[str]:
    """Shift every non-blank line right by ``shift`` columns (``pad`` characters), or left by removing
    leading whitespace."""
    if shift == 0:
        return list(lines)
    out = []
    for line in lines:
        if not line.strip():
            out.append(line)
        elif shift > 0:
            out.append(pad * shift + line)
        else:
            drop = min(-shift, len(_indent(line)))
            out.append(line[drop:])
    return out


def _nearest(text: list[str], search: tuple[str, ...]) -> str:
    """'lines A-B are:' plus the window of the file most similar to the SEARCH text."""
    n = max(1, len([line for line in search if line.strip()]))
    target = "\n".join(line.strip() for line in search if line.strip())
    best, best_ratio = 0, -1.0
    for i in range(max(1, len(text) - n + 1)):
        window = "\n".join(line.strip() for line in text[i:i + n])
        matcher = difflib.SequenceMatcher(None, target, window, autojunk=False)
        if matcher.quick_ratio() <= best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    end = min(len(text), best + n)
    shown = "\n".join(text[best:end])
    return f"nearest lines {best + 1}-{end} are:\n{shown}"


def _blank_run(lines: list[str]) -> int:
    return next((i for i, line in enumerate(lines) if line.strip()), len(lines))


def _trim_blank_edges(search: list[str], replace: list[str]) -> tuple[list[str], list[str]]:
    """Blank lines at the edges of the SEARCH text say nothing about where it is, and must not
    decide which of the file's blank lines an edit removes: leave them out of the match."""
    search = search[_blank_run(search):]
    return search[:len(search) - _blank_run(search[::-1])], replace


def apply_block(source: str, block: Block, filename: str = "the file") -> str:
    """``source`` with ``block`` applied once.

    Raises:
        PatchError: empty SEARCH text, text not found (the reason quotes the nearest lines of the
            file), or text found in more than one place.
    """
    if not any(line.strip() for line in block.search):
        raise PatchError(f"block {block.index}: SEARCH section is empty; copy the lines to change from {filename}")
    text = source.split("\n")
    search, replace = _trim_blank_edges(list(block.search), list(block.replace))
    for finder in (_exact_matches, _loose_matches):
        found = finder(text, search)
        if len(found) > 1:
            raise PatchError(
                f"block {block.index}: SEARCH text matches {len(found)} places in {filename}; include more context"
            )
        if found:
            start, end, shift = found[0]
            pad = _indent(text[start])[:1] or " "
            replacement = _reindent(tuple(replace), shift, pad)
            return "\n".join(text[:start] + replacement + text[end:])
    raise PatchError(f"block {block.index}: SEARCH text not found in {filename}; {_nearest(text, block.search)}")


def apply_blocks(source: str, blocks: list[Block], filename: str = "the file") -> str:
    """``source`` with every block applied in order (each sees the result of the previous ones).

    Raises:
        PatchError: from :func:`apply_block`, or :data:`NO_CHANGE` when the result equals ``source``.
    """
    result = source
    for block in blocks:
        result = apply_block(result, block, filename)
    if result == source:
        raise PatchError(NO_CHANGE)
    return result


def apply_patch(source: str, response: str, filename: str = "the file", max_blocks: int | None = None) -> str:
    """Parse ``response`` and apply its blocks to ``source``; PatchError with the reason otherwise."""
    return apply_blocks(source, parse_blocks(response, max_blocks), filename)
