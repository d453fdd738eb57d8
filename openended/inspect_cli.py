"""Inspection commands (top, show, lineage, diff, tree, query, export, plot, serve, compare)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the inspection commands to the ``openended`` app."""
