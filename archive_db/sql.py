"""The store's SQL text (package data, read once) and turning result rows into dicts.

``migrations/NNNN_name.sql`` are the schema's source of truth, applied in order; the schema
version is their count. ``queries/<name>.sql`` are the named queries: plain SQL with ``:named``
parameters that ``sqlite3``, datasette and :meth:`ArchiveDB.named_query` all run as they are.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from importlib.abc import Traversable
from typing import Any, NamedTuple, TypeVar

from .errors import ArchiveDBError, InvalidValueError

# JSON columns of the agents table, decoded by every read that returns agent rows
AGENT_JSON: tuple[str, ...] = ("descriptors", "metrics")


class Migration(NamedTuple):
    number: int
    name: str  # the file name, e.g. 0001_initial.sql
    sql: str


def _package_dir(sub: str) -> Traversable:
    return resources.files(__package__).joinpath(sub)


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in order; their numbers must be 1..N."""
    found = []
    for entry in _package_dir("migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_[A-Za-z0-9_]+\.sql", entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [m.number for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"archive_db migrations are not numbered 1..N: {numbers}")
    return tuple(found)


SCHEMA_VERSION: int = len(migrations())


def query_names() -> list[str]:
    """Names of the SQL files in ``archive_db/queries/`` (without ``.sql``), sorted."""
    return sorted(e.name[:-4] for e in _package_dir("queries").iterdir() if e.name.endswith(".sql"))


@functools.cache
def query_text(name: str) -> str:
    """The text of ``queries/<name>.sql``; InvalidValueError for an unknown name."""
    entry = _package_dir("queries").joinpath(f"{name}.sql")
    if not re.fullmatch(r"[a-z0-9_]+", name or "") or not entry.is_file():
        raise InvalidValueError(f"unknown named query {name!r}; known: {', '.join(query_names())}")
    return entry.read_text(encoding="utf-8")


def split_sql(script: str) -> list[str]:
    """Split a migration script into statements (trigger bodies included) with sqlite3's parser."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    rest = "\n".join(ln for ln in buf.splitlines() if ln.strip() and not ln.strip().startswith("--"))
    if rest.strip():
        raise ArchiveDBError(f"incomplete SQL statement at the end of a script: {rest[:80]!r}")
    return statements


def ids_json(ids: Iterable[int]) -> str:
    """A JSON array of ids, for ``... IN (SELECT value FROM json_each(?))``."""
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a large result allocates its rows (each row is a tracked tuple:
    10,000 of them would otherwise run a dozen collections over the whole heap)."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc_was_on:
            gc.enable()


RowT = TypeVar("RowT", bound=tuple[Any, ...])


def typed_rows(cursor: sqlite3.Cursor, row_type: type[RowT], per_row: int = 1) -> list[RowT]:
    """Materialise a cursor as ``row_type`` (a NamedTuple): each cursor row holds ``per_row`` of them
    side by side, the cursor's columns ``row_type``'s fields repeated ``per_row`` times (ArchiveDBError
    if they are not). The cells are copied once into ``row_type`` tuples in C. sqlite3 spends about
    0.3 us on each row it hands over besides its cells, so a 10,000-step lineage comes as rows of 16
    steps (``ArchiveDB.ancestors``); a row padded with NULLs past the end gives tuples of NULLs, which
    the caller drops."""
    cols = tuple(d[0] for d in cursor.description or ())
    fields = getattr(row_type, "_fields", None)
    if fields is None or cols != fields * per_row:
        raise ArchiveDBError(f"query columns {cols[:len(fields or cols)]}{'...' if per_row > 1 else ''} "
                             f"do not match {row_type.__name__}{fields}" + (f" x {per_row}" if per_row > 1 else ""))
    make = functools.partial(tuple.__new__, row_type)
    with gc_paused():
        if per_row == 1:
            return list(map(make, cursor.fetchall()))
        cells = itertools.chain.from_iterable(cursor.fetchall())
        return list(map(make, zip(*[cells] * len(fields), strict=True)))


def dict_rows(cursor: sqlite3.Cursor, json_cols: Sequence[str] = AGENT_JSON) -> list[dict[str, Any]]:
    """Materialise a cursor as dicts, decoding JSON columns. Large results (lineages of 10,000
    agents) pause the cyclic GC while they allocate and decode all JSON cells of a column with
    one ``json.loads`` call: together that halves the cost of a 10,000-row lineage."""
    cols = [d[0] for d in cursor.description]
    with gc_paused():
        out = [dict(zip(cols, r, strict=True)) for r in cursor.fetchall()]
        for c in json_cols:
            if c not in cols:
                continue
            cells = [d for d in out if d[c] is not None]
            if not cells:
                continue
            if len(cells) < 16:
                for d in cells:
                    d[c] = json.loads(d[c])
            else:
                # every stored cell is valid JSON (CHECK json_valid), so the join is too
                joined = json.loads("[" + ",".join([d[c] for d in cells]) + "]")
                for d, v in zip(cells, joined, strict=True):
                    d[c] = v
    return out
