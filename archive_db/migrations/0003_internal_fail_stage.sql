-- 0003: fail_stage 'internal': the driver could not record a child's step (the child fails, the campaign goes on).
-- Widening a CHECK needs no change to stored rows: the table's CREATE statement is edited in place,
-- as SQLite documents for changes that no existing row can violate (https://sqlite.org/lang_altertable.html#otheralter).

PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql, '''timeout'', ''invalid'')', '''timeout'', ''invalid'', ''internal'')')
    WHERE type = 'table' AND name = 'agents';
PRAGMA writable_schema = RESET;
