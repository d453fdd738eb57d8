-- ancestors: the lineage of agent :agent_id (unset or empty: the fittest agent), root first and the
-- agent itself last
-- Columns (lineage view): id, parent_id, parent2_id, depth, status, operator, fitness, novelty,
-- cell, archive_event; ArchiveDB.agent(id) has the full row.
-- (the recursion carries only ids, one primary-key lookup per generation; the columns are read
-- once per ancestor; a parent is always proposed before its child, so id order is root first).
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :agent_id 42" ".read archive_db/queries/ancestors.sql"
WITH RECURSIVE chain(id, parent_id) AS (
    SELECT id, parent_id FROM agents
    WHERE id = coalesce(nullif(:agent_id, ''),
                        (SELECT id FROM agents
                         WHERE +status IN ('evaluated', 'archived', 'rejected') AND fitness IS NOT NULL
                         ORDER BY fitness DESC, id LIMIT 1))
    UNION ALL
    SELECT a.id, a.parent_id FROM chain JOIN agents AS a ON a.id = chain.parent_id
)
SELECT a.id, a.parent_id, a.parent2_id, a.depth, a.status, a.operator, a.fitness, a.novelty, a.cell,
       a.archive_event
FROM chain CROSS JOIN agents AS a ON a.id = chain.id
ORDER BY a.id;
