-- agents_by_status: agents whose status is :status (unset or empty: every status), by id, at most :limit
-- rows (-1: no limit; unset or empty: 100).
-- sqlite3 CLI:  sqlite3 campaign.db -cmd ".parameter set :status \"'proposed'\"" -cmd ".parameter set :limit -1" ".read archive_db/queries/agents_by_status.sql"
SELECT *
FROM agents
WHERE status = coalesce(nullif(:status, ''), status)
ORDER BY id
LIMIT coalesce(nullif(:limit, ''), 100);
