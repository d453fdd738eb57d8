"""archive_db: the SQLite lineage tree of an openended campaign (one file = one campaign).

See :class:`ArchiveDB`, the facade. Its rooms: ``connection`` (opening, migrations, read-only
mode, transactions), ``records`` (what goes in and :func:`check_outcome`, the lifecycle rules),
``genomes`` (content-addressed file trees), ``recipes`` (compact genomes, regenerated from their
parent), ``reads`` (lineage and other reads), ``sql`` (the SQL files), ``maintenance``
(:func:`vacuum`, giving free pages back). Schema: ``migrations/`` (source of truth) and
``schema.sql`` (the current schema, generated, for reading). Named queries: ``queries/*.sql``.
"""

from __future__ import annotations

import os

from .connection import check_file, holds_run
from .errors import (
    ArchiveDBError,
    InvalidTransitionError,
    InvalidValueError,
    NewerSchemaError,
    NotADatabaseError,
    RegenerationError,
    RunExistsError,
    UnknownAgentError,
    unreadable,
)
from .genomes import genome_hash
from .integrity import IntegrityReport
from .maintenance import VacuumReport, vacuum
from .reads import Ancestor
from .recipes import MATERIALISE_EVERY, Recipe
from .records import (
    FAIL_STAGES,
    RUN_STATUSES,
    STATUSES,
    TERMINAL_STATUSES,
    AgentState,
    CheckedOutcome,
    Evaluation,
    Outcome,
    Proposal,
    check_outcome,
)
from .sql import SCHEMA_VERSION, Migration, migrations, query_names, split_sql
from .store import ArchiveDB

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "TERMINAL_STATUSES",
    "FAIL_STAGES",
    "RUN_STATUSES",
    "ArchiveDB",
    "Ancestor",
    "check_file",
    "holds_run",
    "Proposal",
    "Outcome",
    "Evaluation",
    "AgentState",
    "CheckedOutcome",
    "check_outcome",
    "ArchiveDBError",
    "NewerSchemaError",
    "NotADatabaseError",
    "UnknownAgentError",
    "InvalidTransitionError",
    "InvalidValueError",
    "RunExistsError",
    "RegenerationError",
    "Recipe",
    "MATERIALISE_EVERY",
    "Migration",
    "migrations",
    "query_names",
    "genome_hash",
    "unreadable",
    "split_sql",
    "schema_sql",
    "vacuum",
    "VacuumReport",
    "IntegrityReport",
]


def schema_sql(path: str | os.PathLike[str] | None = None) -> str:
    """The current schema as SQL text, read from a fully migrated database's sqlite_master
    (an in-memory one when ``path`` is None). This is how ``schema.sql`` is generated:
    ``python -m archive_db.schema > archive_db/schema.sql``."""
    from ._schema import dump_schema

    return dump_schema(path)
