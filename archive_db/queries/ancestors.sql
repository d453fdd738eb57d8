-- ancestors: the lineage of agent :agent_id, root first and the agent itself last
-- Columns (lineage view): id, parent_id, parent2_id, depth, status, operator, fitness, novelty,
-- cell, archive_event; ArchiveDB.agent(id) has the full row.
-- (one primary-key lookup per generation: a 10,000-deep chain takes a few ms in SQLite).
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :agent_id 42" ".read archive_db/queries/ancestors.sql"
WITH RECURSIVE chain(id, parent_id, parent2_id, depth, status, operator, fitness, novelty, cell, archive_event) AS (
    SELECT id, parent_id, parent2_id, depth, status, operator, fitness, novelty, cell, archive_event
    FROM agents WHERE id = :agent_id
    UNION ALL
    SELECT a.id, a.parent_id, a.parent2_id, a.depth, a.status, a.operator, a.fitness, a.novelty, a.cell,
           a.archive_event
    FROM chain JOIN agents AS a ON a.id = chain.parent_id
)
SELECT * FROM chain ORDER BY depth;
