-- archive_db schema, version 12 (PRAGMA user_version = 12).
-- GENERATED from archive_db/migrations/*.sql: documentation only, never executed by the code.
-- Regenerate with:  python -m archive_db.schema > archive_db/schema.sql

CREATE TABLE agents (
    id            INTEGER PRIMARY KEY,          -- assigned by the caller, sequential
    parent_id     INTEGER REFERENCES agents(id),
    parent2_id    INTEGER REFERENCES agents(id),
    depth         INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0),
    status        TEXT NOT NULL DEFAULT 'proposed'
                  CHECK (status IN ('proposed', 'mutated', 'evaluated', 'archived', 'rejected', 'failed')),
    fail_stage    TEXT CHECK (fail_stage IS NULL OR fail_stage IN ('mutation', 'sandbox', 'evaluation', 'timeout', 'invalid', 'internal')),
    fail_reason   TEXT,
    operator      TEXT NOT NULL,
    model         TEXT,
    seed          INTEGER NOT NULL,
    genome_hash   TEXT,                         -- genomes(hash), or a recipes row regenerates it
    fitness       REAL,
    descriptors   TEXT CHECK (descriptors IS NULL OR json_valid(descriptors)),
    novelty       REAL,
    cell          INTEGER,
    archive_event TEXT CHECK (archive_event IS NULL OR archive_event IN ('new_cell', 'improved')),
    metrics       TEXT CHECK (metrics IS NULL OR json_valid(metrics)),
    feedback      TEXT,
    tokens_in     INTEGER NOT NULL DEFAULT 0,
    tokens_out    INTEGER NOT NULL DEFAULT 0,
    cost          REAL NOT NULL DEFAULT 0.0,
    eval_seconds  REAL,
    duplicate_of  INTEGER REFERENCES agents(id),
    created_at    REAL NOT NULL,
    mutated_at    REAL,
    evaluated_at  REAL,
    finished_at   REAL,
    finish_seq    INTEGER,                      -- order in which outcomes became terminal
    CHECK (status <> 'failed' OR (fail_stage IS NOT NULL AND fail_reason IS NOT NULL AND fail_reason <> '')),
    CHECK (status NOT IN ('mutated', 'evaluated', 'archived', 'rejected') OR genome_hash IS NOT NULL),
    CHECK (status NOT IN ('evaluated', 'archived', 'rejected') OR (fitness IS NOT NULL AND descriptors IS NOT NULL))
);

CREATE TABLE agent_totals (
    operator   TEXT NOT NULL,
    model      TEXT NOT NULL,                 -- 'none' for agents without a model
    is_child   INTEGER NOT NULL,              -- parent_id IS NOT NULL
    status     TEXT NOT NULL,
    agents     INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,    -- duplicate_of IS NOT NULL
    tokens     INTEGER NOT NULL DEFAULT 0,    -- tokens_in + tokens_out
    cost       REAL NOT NULL DEFAULT 0.0,
    PRIMARY KEY (operator, model, is_child, status)
) WITHOUT ROWID;

CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,            -- rowid: content stays in insertion order
    hash       TEXT NOT NULL UNIQUE,           -- sha256 hex of the uncompressed content
    content    BLOB NOT NULL,                  -- zlib-compressed when that made it smaller
    compressed INTEGER NOT NULL DEFAULT 0 CHECK (compressed IN (0, 1)),
    size       INTEGER NOT NULL                -- uncompressed size in bytes
, base INTEGER REFERENCES blobs(id), depth INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0));

CREATE TABLE elite_totals (id INTEGER PRIMARY KEY CHECK (id = 1), elites INTEGER NOT NULL);

CREATE TABLE "elites" (
    cell     INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL REFERENCES agents(id)
);

CREATE TABLE evaluation_agents (
    agent_id INTEGER NOT NULL REFERENCES agents(id),
    run_id   INTEGER NOT NULL REFERENCES evaluation_runs(id),
    PRIMARY KEY (agent_id, run_id)
) WITHOUT ROWID;

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

CREATE TABLE genomes (
    hash        TEXT PRIMARY KEY,              -- sha256 over the sorted (path, blob hash) pairs
    manifest    TEXT NOT NULL CHECK (json_valid(manifest)),   -- {path: blob hash}
    total_bytes INTEGER NOT NULL
);

CREATE TABLE lineage_snapshot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    next_id     INTEGER NOT NULL,   -- children: those of every agent with an id below this are counted
    finish_seq  INTEGER NOT NULL,   -- discoveries: those of every agent with a finish_seq up to this
    children    BLOB NOT NULL,      -- zlib of little-endian int64, one per agent id: children proposed
    discoveries BLOB NOT NULL       -- the same: children that entered a new archive cell
);

CREATE TABLE recipe_methods (
    id        INTEGER PRIMARY KEY,
    operator  TEXT NOT NULL,
    version   INTEGER NOT NULL,
    params    TEXT NOT NULL CHECK (json_valid(params)),
    made_with TEXT NOT NULL,
    UNIQUE (operator, version, params, made_with)
);

CREATE TABLE recipes (
    agent_id INTEGER PRIMARY KEY REFERENCES agents(id),
    method   INTEGER NOT NULL REFERENCES recipe_methods(id),
    hops     INTEGER NOT NULL CHECK (hops >= 1)
);

CREATE TABLE runs (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    name              TEXT NOT NULL,
    task              TEXT NOT NULL,
    seed              INTEGER NOT NULL,
    config            TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
    descriptor_schema TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(descriptor_schema)),
    state             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(state)),
    status            TEXT NOT NULL DEFAULT 'created'
                      CHECK (status IN ('created', 'running', 'stopped', 'finished', 'failed')),
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    schema_version    INTEGER NOT NULL
);

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

CREATE TABLE transcripts (
    id         INTEGER PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents(id),
    created_at REAL NOT NULL,
    calls      INTEGER NOT NULL DEFAULT 0,
    rejected   INTEGER NOT NULL DEFAULT 0,
    tokens_in  INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost       REAL NOT NULL DEFAULT 0.0,
    limit_hit  TEXT,
    entries    TEXT NOT NULL DEFAULT '[]',  -- JSON: [{at, endpoint, model, status, upstream, request, response, ...}]
    dropped    INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX idx_agents_evaluated ON agents(id) WHERE status = 'evaluated';

CREATE INDEX idx_agents_failed    ON agents(id) WHERE status = 'failed';

CREATE UNIQUE INDEX idx_agents_finish_seq ON agents(finish_seq) WHERE finish_seq IS NOT NULL;

CREATE INDEX idx_agents_fitness     ON agents(fitness);

CREATE INDEX idx_agents_mutated   ON agents(id) WHERE status = 'mutated';

CREATE INDEX idx_agents_novelty     ON agents(novelty);

CREATE INDEX idx_agents_parent2_id ON agents(parent2_id) WHERE parent2_id IS NOT NULL;

CREATE INDEX idx_agents_parent_id   ON agents(parent_id);

CREATE INDEX idx_agents_proposed  ON agents(id) WHERE status = 'proposed';

CREATE INDEX idx_blobs_base ON blobs(base) WHERE base IS NOT NULL;

CREATE INDEX idx_elites_agent ON elites(agent_id);

CREATE INDEX idx_stats_at ON stats(at);

CREATE INDEX transcripts_agent ON transcripts(agent_id);

CREATE TRIGGER agent_totals_delete AFTER DELETE ON agents
BEGIN
    UPDATE agent_totals SET agents = agents - 1, duplicates = duplicates - (OLD.duplicate_of IS NOT NULL),
        tokens = tokens - (OLD.tokens_in + OLD.tokens_out), cost = cost - OLD.cost
    WHERE operator = OLD.operator AND model = COALESCE(OLD.model, 'none') AND is_child = (OLD.parent_id IS NOT NULL)
      AND status = OLD.status;
END;

CREATE TRIGGER agent_totals_insert AFTER INSERT ON agents
BEGIN
    INSERT INTO agent_totals(operator, model, is_child, status, agents, duplicates, tokens, cost)
    VALUES (NEW.operator, COALESCE(NEW.model, 'none'), NEW.parent_id IS NOT NULL, NEW.status, 1,
            NEW.duplicate_of IS NOT NULL, NEW.tokens_in + NEW.tokens_out, NEW.cost)
    ON CONFLICT(operator, model, is_child, status) DO UPDATE SET
        agents = agents + 1, duplicates = duplicates + excluded.duplicates, tokens = tokens + excluded.tokens,
        cost = cost + excluded.cost;
END;

CREATE TRIGGER agent_totals_update
AFTER UPDATE OF status, operator, model, parent_id, duplicate_of, tokens_in, tokens_out, cost ON agents
BEGIN
    UPDATE agent_totals SET agents = agents - 1, duplicates = duplicates - (OLD.duplicate_of IS NOT NULL),
        tokens = tokens - (OLD.tokens_in + OLD.tokens_out), cost = cost - OLD.cost
    WHERE operator = OLD.operator AND model = COALESCE(OLD.model, 'none') AND is_child = (OLD.parent_id IS NOT NULL)
      AND status = OLD.status;
    INSERT INTO agent_totals(operator, model, is_child, status, agents, duplicates, tokens, cost)
    VALUES (NEW.operator, COALESCE(NEW.model, 'none'), NEW.parent_id IS NOT NULL, NEW.status, 1,
            NEW.duplicate_of IS NOT NULL, NEW.tokens_in + NEW.tokens_out, NEW.cost)
    ON CONFLICT(operator, model, is_child, status) DO UPDATE SET
        agents = agents + 1, duplicates = duplicates + excluded.duplicates, tokens = tokens + excluded.tokens,
        cost = cost + excluded.cost;
END;

CREATE TRIGGER agents_no_backward_move
BEFORE UPDATE OF status ON agents
WHEN NEW.status <> 'failed'
 AND (CASE NEW.status WHEN 'proposed' THEN 0 WHEN 'mutated' THEN 1 WHEN 'evaluated' THEN 2 ELSE 3 END)
   < (CASE OLD.status WHEN 'proposed' THEN 0 WHEN 'mutated' THEN 1 WHEN 'evaluated' THEN 2 ELSE 3 END)
BEGIN
    SELECT RAISE(ABORT, 'illegal status transition: backward move');
END;

CREATE TRIGGER agents_terminal_frozen
BEFORE UPDATE ON agents
WHEN OLD.status IN ('archived', 'rejected', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'illegal status transition: agent is terminal (archived, rejected or failed) and cannot change');
END;

CREATE TRIGGER elite_totals_delete AFTER DELETE ON elites
BEGIN
    UPDATE elite_totals SET elites = elites - 1 WHERE id = 1;
END;

CREATE TRIGGER elite_totals_insert AFTER INSERT ON elites
BEGIN
    UPDATE elite_totals SET elites = elites + 1 WHERE id = 1;
END;

CREATE VIEW evaluations AS
SELECT r.id AS id, m.agent_id AS agent_id, r.stage AS stage, r.started_at AS started_at, r.seconds AS seconds,
       r.exit_status AS exit_status,
       CASE WHEN r.agents = 1 THEN r.fitness ELSE (SELECT a.fitness FROM agents AS a WHERE a.id = m.agent_id) END
           AS fitness,
       r.result AS result, r.stdout_tail AS stdout_tail, r.stderr_tail AS stderr_tail,
       r.failure_kind AS failure_kind
FROM evaluation_agents AS m JOIN evaluation_runs AS r ON r.id = m.run_id;
