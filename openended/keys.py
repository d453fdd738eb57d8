"""Misspelt keys of a pydantic-validated table (a campaign config, a task.toml): the closest valid key."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable

from pydantic import BaseModel


def model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose keys hold the last part of ``loc`` (a table's path from ``root``, list indices included)."""
    model = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            return None
        model = inner[0]
    return model


def closest_key(root: type[BaseModel], loc: tuple[int | str, ...], extra: Iterable[str] = ()) -> str | None:
    """The valid key closest to the misspelt last part of ``loc``, if one is close (``extra``: keys of ``root``
    that its model does not declare)."""
    model = model_at(root, loc)
    if model is None:
        return None
    valid = list(model.model_fields) + (list(extra) if model is root else [])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    return close[0] if close else None
