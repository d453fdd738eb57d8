"""``--help`` that names values, not Python types.

Recent typer prints each value's Python type in ``--help`` (``<int>``, ``<bool>``, ``<list[str]>``, even
``<bool>`` beside ``--help``). The command and group classes here give every value a name instead:
the metavar a parameter declares, else its own name in capitals (``--seed SEED``, ``DB``); flags show
none. Every command of the ``openended`` CLI uses them (``cls=Command``, ``Typer(cls=Group)``).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class _Argument(TyperArgument):
    """An argument whose name (its metavar) is all ``--help`` shows of it: no type column."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _name_values(params: list[Any]) -> None:
    for param in params:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            param.__class__ = _Argument
        elif isinstance(param, TyperOption) and param.metavar is None:
            long = max(param.opts, key=len).lstrip("-") if param.opts else param.name or "value"
            param.metavar = "" if param.is_flag else long.replace("-", "_").upper()


def _without_type(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


class Command(TyperCommand):
    """A command whose ``--help`` shows value names (``N``, ``DB``) instead of Python types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _without_type(super().get_help_option(ctx))


class Group(TyperGroup):
    """A command group whose own ``--help`` shows no ``<bool>``."""

    def get_help_option(self, ctx: Any) -> Any:
        return _without_type(super().get_help_option(ctx))
