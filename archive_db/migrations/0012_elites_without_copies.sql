-- 0012: an elite row is its cell and its agent (issue 18). Its fitness was a copy of the agent's, and its
-- updated_at the time of that copy: 30 of a maze child's stored bytes, since the default archive keeps every
-- child. Readers join agents for the fitness, as they did for the descriptors.
CREATE TABLE elites_slim (
    cell     INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL REFERENCES agents(id)
);
INSERT INTO elites_slim(cell, agent_id) SELECT cell, agent_id FROM elites;
DROP TABLE elites;
ALTER TABLE elites_slim RENAME TO elites;
CREATE INDEX IF NOT EXISTS idx_elites_agent ON elites(agent_id);
CREATE TRIGGER IF NOT EXISTS elite_totals_insert AFTER INSERT ON elites
BEGIN
    UPDATE elite_totals SET elites = elites + 1 WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS elite_totals_delete AFTER DELETE ON elites
BEGIN
    UPDATE elite_totals SET elites = elites - 1 WHERE id = 1;
END;
