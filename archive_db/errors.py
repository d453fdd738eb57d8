"""Exceptions raised by :mod:`archive_db`. All derive from :class:`ArchiveDBError`."""

from __future__ import annotations

import os
import sqlite3


class ArchiveDBError(Exception):
    """Base class of every error the store raises on purpose."""


class NewerSchemaError(ArchiveDBError):
    """The database was written by a newer openended (its schema version is above ours)."""


class NotADatabaseError(ArchiveDBError):
    """The file is not an SQLite database (or is corrupt, or is not an openended archive)."""


class UnknownAgentError(ArchiveDBError, KeyError):
    """An agent id (or parent id) that is not in the database."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidTransitionError(ArchiveDBError):
    """A lifecycle move the state machine does not allow."""


class InvalidValueError(ArchiveDBError, ValueError):
    """A value that is out of range, non-finite, of the wrong length or type."""


class RunExistsError(ArchiveDBError):
    """``create_run`` on a database that already holds a run."""


class RegenerationError(ArchiveDBError):
    """A compact genome (:mod:`archive_db.recipes`) that cannot be regenerated to the bytes it had: its
    recipe, seed or an ancestor's genome changed, or this openended regenerates it differently. Never
    answered with a wrong genome. ``agent_id``: the agent whose genome was asked for."""

    def __init__(self, message: str, agent_id: int):
        super().__init__(message)
        self.agent_id = agent_id


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error says the file's pages are damaged (not locked, full or missing)."""
    text = str(exc)
    return "malformed" in text or "not a database" in text or "corrupt" in text


def unreadable(path: str | os.PathLike[str], exc: sqlite3.DatabaseError) -> ArchiveDBError:
    """What to tell a user when SQLite fails while reading ``path`` after it opened: damaged pages past a sound
    header (:class:`NotADatabaseError`, with the way to recover), or another database error, named."""
    text = str(exc)
    if is_damage(exc):
        return NotADatabaseError(f"{path} is damaged ({text}). Keep a copy, and try `sqlite3 {path} .recover`")
    return ArchiveDBError(f"{path}: the database could not be read ({text})")
