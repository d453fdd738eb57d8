-- best_lineage: the ancestors of the best agent (highest fitness among evaluated, archived and
-- rejected agents; ties go to the lowest id), root first, the best agent last.
-- Columns (lineage view): id, parent_id, parent2_id, depth, status, operator, fitness, novelty,
-- cell, archive_event; ArchiveDB.agent(id) has the full row.
-- sqlite3 CLI:  sqlite3 campaign.db ".read archive_db/queries/best_lineage.sql"
WITH RECURSIVE best(id) AS (
    SELECT id FROM agents
    -- unary +: sort by the fitness index, not the status one
    WHERE +status IN ('evaluated', 'archived', 'rejected') AND fitness IS NOT NULL
    ORDER BY fitness DESC, id ASC
    LIMIT 1
),
chain(id, up) AS (
    SELECT id, 0 FROM best
    UNION ALL
    SELECT agents.parent_id, chain.up + 1
    FROM chain JOIN agents ON agents.id = chain.id
    WHERE agents.parent_id IS NOT NULL
)
SELECT agents.id, agents.parent_id, agents.parent2_id, agents.depth, agents.status, agents.operator,
       agents.fitness, agents.novelty, agents.cell, agents.archive_event
FROM chain JOIN agents ON agents.id = chain.id
ORDER BY chain.up DESC;
