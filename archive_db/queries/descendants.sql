-- descendants: every agent below :agent_id (unset or empty: the first root) in the parent_id tree
-- (the agent itself excluded), ordered by depth then id. Crossover second parents (parent2_id) are
-- not followed.
-- Columns (lineage view): id, parent_id, parent2_id, depth, status, operator, fitness, novelty,
-- cell, archive_event; ArchiveDB.agent(id) has the full row.
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :agent_id 42" ".read archive_db/queries/descendants.sql"
WITH RECURSIVE below(id) AS (
    SELECT id FROM agents WHERE parent_id = coalesce(nullif(:agent_id, ''), (SELECT min(id) FROM agents))
    UNION ALL
    SELECT agents.id FROM below JOIN agents ON agents.parent_id = below.id
)
SELECT agents.id, agents.parent_id, agents.parent2_id, agents.depth, agents.status, agents.operator,
       agents.fitness, agents.novelty, agents.cell, agents.archive_event
FROM below JOIN agents ON agents.id = below.id
ORDER BY agents.depth, agents.id;
