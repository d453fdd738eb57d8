-- discovery_counts: one row per parent: parent_id, discoveries (children that entered a new archive cell).
-- sqlite3 CLI:  sqlite3 campaign.db ".read archive_db/queries/discovery_counts.sql"
SELECT parent_id, COUNT(*) AS discoveries
FROM agents
WHERE parent_id IS NOT NULL AND archive_event = 'new_cell'
GROUP BY parent_id
ORDER BY parent_id;
