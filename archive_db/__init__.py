"""archive_db: the SQLite lineage tree of an openended campaign (one file = one campaign).

See :class:`ArchiveDB`. Schema: ``migrations/`` (source of truth) and ``schema.sql`` (the
current schema, generated, for reading). Named queries: ``queries/*.sql``.
"""

from .errors import (
    ArchiveDBError,
    InvalidTransitionError,
    InvalidValueError,
    NewerSchemaError,
    NotADatabaseError,
    RunExistsError,
    UnknownAgentError,
)
from .store import (
    FAIL_STAGES,
    RUN_STATUSES,
    SCHEMA_VERSION,
    STATUSES,
    TERMINAL_STATUSES,
    ArchiveDB,
    Outcome,
    Proposal,
    genome_hash,
    query_names,
    split_sql,
)

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "TERMINAL_STATUSES",
    "FAIL_STAGES",
    "RUN_STATUSES",
    "ArchiveDB",
    "Proposal",
    "Outcome",
    "ArchiveDBError",
    "NewerSchemaError",
    "NotADatabaseError",
    "UnknownAgentError",
    "InvalidTransitionError",
    "InvalidValueError",
    "RunExistsError",
    "query_names",
    "genome_hash",
    "split_sql",
    "schema_sql",
]


def schema_sql(path=None) -> str:
    """The current schema as SQL text, read from a fully migrated database's sqlite_master
    (an in-memory one when ``path`` is None). This is how ``schema.sql`` is generated:
    ``python -m archive_db.schema > archive_db/schema.sql``."""
    from ._schema import dump_schema

    return dump_schema(path)
