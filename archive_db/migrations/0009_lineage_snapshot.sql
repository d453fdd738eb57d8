-- 0009: per-agent lineage counts as of a point in the store (archive_db.lineage), so that a resume reads the
-- rows after it instead of grouping every agent (seconds at 10^7 agents). One row, rewritten by a resume.
CREATE TABLE IF NOT EXISTS lineage_snapshot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    next_id     INTEGER NOT NULL,   -- children: those of every agent with an id below this are counted
    finish_seq  INTEGER NOT NULL,   -- discoveries: those of every agent with a finish_seq up to this
    children    BLOB NOT NULL,      -- zlib of little-endian int64, one per agent id: children proposed
    discoveries BLOB NOT NULL       -- the same: children that entered a new archive cell
);
