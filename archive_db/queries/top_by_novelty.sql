-- top_by_novelty: the :k most novel evaluated, archived or rejected agents (ties: lowest id first;
-- :k unset or empty: 10).
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :k 10" ".read archive_db/queries/top_by_novelty.sql"
SELECT *
FROM agents
-- unary +: sort by the novelty index, not the status one
WHERE +status IN ('evaluated', 'archived', 'rejected') AND novelty IS NOT NULL
ORDER BY novelty DESC, id ASC
LIMIT coalesce(nullif(:k, ''), 10);
