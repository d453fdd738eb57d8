-- top_by_fitness: the :k fittest evaluated, archived or rejected agents (ties: lowest id first;
-- :k unset or empty: 10).
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :k 10" ".read archive_db/queries/top_by_fitness.sql"
SELECT *
FROM agents
-- unary +: sort by the fitness index, not the status one
WHERE +status IN ('evaluated', 'archived', 'rejected') AND fitness IS NOT NULL
ORDER BY fitness DESC, id ASC
LIMIT coalesce(nullif(:k, ''), 10);
