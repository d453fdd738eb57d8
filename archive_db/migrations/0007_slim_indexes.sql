-- 0007: indexes sized to what is looked up (issue 18: bytes per child). A finished child is archived or
-- rejected, and nothing looks those up by status; what is (resume's pending children, the failed ones) is
-- a few rows. One index over every agent's status cost ~19 bytes a child; a partial index per status that
-- is looked up holds only the agents in it (SQLite uses a partial index for `status = 'proposed'` when its
-- WHERE is that same term, so each status gets its own). agents.cell is never searched (the elites table
-- maps cells to agents): its index, ~12 bytes a child in archives where every member is its own cell, goes.
DROP INDEX IF EXISTS idx_agents_status;
DROP INDEX IF EXISTS idx_agents_cell;
CREATE INDEX IF NOT EXISTS idx_agents_proposed  ON agents(id) WHERE status = 'proposed';
CREATE INDEX IF NOT EXISTS idx_agents_mutated   ON agents(id) WHERE status = 'mutated';
CREATE INDEX IF NOT EXISTS idx_agents_evaluated ON agents(id) WHERE status = 'evaluated';
CREATE INDEX IF NOT EXISTS idx_agents_failed    ON agents(id) WHERE status = 'failed';
