"""``python -m archive_db.schema [DB]`` prints the current schema (see ``schema.sql``)."""

import sys

from ._schema import dump_schema

if __name__ == "__main__":
    sys.stdout.write(dump_schema(sys.argv[1] if len(sys.argv) > 1 else None))
