-- children_counts: one row per parent: parent_id, children (number of children of any status).
-- sqlite3 CLI:  sqlite3 campaign.db ".read archive_db/queries/children_counts.sql"
SELECT parent_id, COUNT(*) AS children
FROM agents
WHERE parent_id IS NOT NULL
GROUP BY parent_id
ORDER BY parent_id;
