-- 0002: progress snapshots (stats) and indexes for the driver's and the dashboards' common reads.

CREATE TABLE stats (
    id                 INTEGER PRIMARY KEY,
    at                 REAL NOT NULL,
    children_done      INTEGER NOT NULL DEFAULT 0,
    children_failed    INTEGER NOT NULL DEFAULT 0,
    children_in_flight INTEGER NOT NULL DEFAULT 0,
    archive_size       INTEGER NOT NULL DEFAULT 0,
    coverage           REAL,
    qd_score           REAL,
    best_fitness       REAL,
    mean_fitness       REAL,
    extra              TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(extra))
);
CREATE INDEX idx_stats_at ON stats(at);

-- deterministic replay order and a cheap MAX(finish_seq)
CREATE UNIQUE INDEX idx_agents_finish_seq ON agents(finish_seq) WHERE finish_seq IS NOT NULL;
CREATE INDEX idx_agents_cell       ON agents(cell) WHERE cell IS NOT NULL;
CREATE INDEX idx_agents_parent2_id ON agents(parent2_id) WHERE parent2_id IS NOT NULL;
CREATE INDEX idx_evaluations_agent ON evaluations(agent_id);
CREATE INDEX idx_elites_agent      ON elites(agent_id);
