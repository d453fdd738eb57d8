-- ancestors: the lineage of agent :agent_id, root first and the agent itself last
-- Columns (lineage view): id, parent_id, parent2_id, depth, status, operator, fitness, novelty,
-- cell, archive_event; ArchiveDB.agent(id) has the full row.
-- (walks parent_id through the agents primary key; a 10,000-deep chain takes a few ms).
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :agent_id 42" ".read archive_db/queries/ancestors.sql"
WITH RECURSIVE chain(id, up) AS (
    SELECT id, 0 FROM agents WHERE id = :agent_id
    UNION ALL
    SELECT agents.parent_id, chain.up + 1
    FROM chain JOIN agents ON agents.id = chain.id
    WHERE agents.parent_id IS NOT NULL
)
SELECT agents.id, agents.parent_id, agents.parent2_id, agents.depth, agents.status, agents.operator,
       agents.fitness, agents.novelty, agents.cell, agents.archive_event
FROM chain JOIN agents ON agents.id = chain.id
ORDER BY chain.up DESC;
