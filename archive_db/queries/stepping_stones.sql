-- stepping_stones: ancestors of the best agent (itself excluded), root first, that never held the
-- best agent's archive cell: their cell differs from the best's cell, or they were never archived.
-- Columns (lineage view): id, parent_id, parent2_id, depth, status, operator, fitness, novelty,
-- cell, archive_event; ArchiveDB.agent(id) has the full row.
-- Meaningful for grid and cvt archives; in `all` and `novelty` archives every member has a cell of
-- its own, so every ancestor counts as a stepping stone.
-- sqlite3 CLI:  sqlite3 campaign.db ".read archive_db/queries/stepping_stones.sql"
WITH RECURSIVE best(id, cell) AS (
    SELECT id, cell FROM agents
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
WHERE chain.up > 0
  AND (agents.status <> 'archived'
       OR agents.cell IS NULL
       OR (SELECT cell FROM best) IS NULL
       OR agents.cell <> (SELECT cell FROM best))
ORDER BY chain.up DESC;
