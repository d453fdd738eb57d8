-- 0011: a sandbox run is stored once, not once per child (issue 18). A batch of a parameter task (32-64 maze
-- children) is evaluated in one run, and each child had a row that differed from its siblings' only in its
-- agent_id and its fitness, a copy of the agent's: about 64 of a maze child's 455 stored bytes.
-- evaluation_runs: one row per run and stage; it covers `agents` consecutive agent ids from agent_id. A row that
-- covers more than one agent holds no fitness: each agent's is its own (agents.fitness; the store collapses
-- only rows whose fitness is their finished agent's). At most 1024 agents a row, so that a lookup by agent
-- reads a bounded range of the index.
-- evaluations: the view that gives one row per agent and run, as the table did before (same columns).
ALTER TABLE evaluations RENAME TO evaluation_runs;
ALTER TABLE evaluation_runs ADD COLUMN agents INTEGER NOT NULL DEFAULT 1 CHECK (agents BETWEEN 1 AND 1024);
DROP INDEX IF EXISTS idx_evaluations_agent;
CREATE INDEX IF NOT EXISTS idx_evaluation_runs_agent ON evaluation_runs(agent_id);
CREATE VIEW IF NOT EXISTS evaluations AS
SELECT r.id AS id, a.id AS agent_id, r.stage AS stage, r.started_at AS started_at, r.seconds AS seconds,
       r.exit_status AS exit_status, CASE WHEN r.agents = 1 THEN r.fitness ELSE a.fitness END AS fitness,
       r.result AS result, r.stdout_tail AS stdout_tail, r.stderr_tail AS stderr_tail,
       r.failure_kind AS failure_kind
FROM agents AS a JOIN evaluation_runs AS r
  ON r.agent_id <= a.id AND r.agent_id > a.id - 1024 AND a.id < r.agent_id + r.agents;
