-- operator_success: per operator and model (NULL model reads 'none'), how its children fared.
-- Columns: operator, model, children (non-root children proposed), finished (archived, rejected or
-- failed), archived, failed, success_rate (archived / finished; NULL while none finished).
-- Roots (seed, random) have no parent and are left out: nothing was mutated to make them.
-- sqlite3 CLI:  sqlite3 campaign.db ".read archive_db/queries/operator_success.sql"
SELECT operator,
       COALESCE(model, 'none') AS model,
       COUNT(*) AS children,
       SUM(status IN ('archived', 'rejected', 'failed')) AS finished,
       SUM(status = 'archived') AS archived,
       SUM(status = 'failed') AS failed,
       1.0 * SUM(status = 'archived') / NULLIF(SUM(status IN ('archived', 'rejected', 'failed')), 0) AS success_rate
FROM agents
WHERE parent_id IS NOT NULL
GROUP BY operator, COALESCE(model, 'none')
ORDER BY operator, model;
