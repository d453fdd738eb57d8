-- operator_success: per operator and model (NULL model reads 'none'), how its children fared.
-- Columns: operator, model, children (non-root children proposed), finished (archived, rejected or
-- failed), archived, failed, success_rate (archived / finished; NULL while none finished).
-- Roots (seed, random) have no parent and are left out: nothing was mutated to make them.
-- Read from agent_totals (kept by triggers on agents): a few rows whatever the campaign's size.
-- sqlite3 CLI:  sqlite3 campaign.db ".read archive_db/queries/operator_success.sql"
SELECT operator,
       model,
       SUM(agents) AS children,
       SUM(CASE WHEN status IN ('archived', 'rejected', 'failed') THEN agents ELSE 0 END) AS finished,
       SUM(CASE WHEN status = 'archived' THEN agents ELSE 0 END) AS archived,
       SUM(CASE WHEN status = 'failed' THEN agents ELSE 0 END) AS failed,
       1.0 * SUM(CASE WHEN status = 'archived' THEN agents ELSE 0 END)
           / NULLIF(SUM(CASE WHEN status IN ('archived', 'rejected', 'failed') THEN agents ELSE 0 END), 0) AS success_rate
FROM agent_totals
WHERE is_child = 1
GROUP BY operator, model
HAVING SUM(agents) > 0
ORDER BY operator, model;
