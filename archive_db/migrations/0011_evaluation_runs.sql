-- 0011: a sandbox run is stored once, not once per child (issue 18). A batch of a parameter task (32-64 maze
-- children) is evaluated in one run, and each child had a row that differed from its siblings' only in its
-- agent_id and its fitness, a copy of the agent's: about 64 of a maze child's 455 stored bytes.
-- evaluation_runs: one row per run and stage. A run of one agent keeps its fitness (a stage's may differ from
-- the agent's); a run of several holds none: each agent's is its own (agents.fitness; the store shares a run
-- only between finished agents whose row's fitness is theirs).
-- evaluation_agents: which agents a run evaluated (its primary key is the lookup by agent).
-- evaluations: the view that gives one row per agent and run, with the table's old columns; its id is the
-- run's, shared by the agents of a run.
CREATE TABLE evaluation_runs (
    id           INTEGER PRIMARY KEY,
    agents       INTEGER NOT NULL DEFAULT 1 CHECK (agents >= 1),
    stage        TEXT NOT NULL,
    started_at   REAL NOT NULL,
    seconds      REAL NOT NULL,
    exit_status  INTEGER,
    fitness      REAL,
    result       TEXT CHECK (result IS NULL OR json_valid(result)),
    stdout_tail  TEXT NOT NULL DEFAULT '',
    stderr_tail  TEXT NOT NULL DEFAULT '',
    failure_kind TEXT
);
CREATE TABLE evaluation_agents (
    agent_id INTEGER NOT NULL REFERENCES agents(id),
    run_id   INTEGER NOT NULL REFERENCES evaluation_runs(id),
    PRIMARY KEY (agent_id, run_id)
) WITHOUT ROWID;
INSERT INTO evaluation_runs(id, agents, stage, started_at, seconds, exit_status, fitness, result, stdout_tail,
                            stderr_tail, failure_kind)
SELECT id, 1, stage, started_at, seconds, exit_status, fitness, result, stdout_tail, stderr_tail, failure_kind
FROM evaluations;
INSERT INTO evaluation_agents(agent_id, run_id) SELECT agent_id, id FROM evaluations;
DROP TABLE evaluations;
CREATE VIEW evaluations AS
SELECT r.id AS id, m.agent_id AS agent_id, r.stage AS stage, r.started_at AS started_at, r.seconds AS seconds,
       r.exit_status AS exit_status,
       CASE WHEN r.agents = 1 THEN r.fitness ELSE (SELECT a.fitness FROM agents AS a WHERE a.id = m.agent_id) END
           AS fitness,
       r.result AS result, r.stdout_tail AS stdout_tail, r.stderr_tail AS stderr_tail,
       r.failure_kind AS failure_kind
FROM evaluation_agents AS m JOIN evaluation_runs AS r ON r.id = m.run_id;
