-- 0005: compact genomes. A parameter child made by a deterministic operator from its parent (Gaussian
-- noise from its recorded seed) may be stored as its recipe instead of its files: the agent row keeps
-- its parent, seed and genome_hash (the content hash every regeneration is checked against); a recipes
-- row names the method that regenerates it. Such an agent has no genomes row, so agents.genome_hash no
-- longer references genomes(hash): removing a FOREIGN KEY is a change no stored row can violate, made in
-- place as SQLite documents (https://sqlite.org/lang_altertable.html#otheralter).

-- What regenerates a genome: an operator at a version, its parameters, and what it ran with when the
-- recipe was recorded (e.g. "numpy 2.4.6"), so that a mismatch can say what differs.
CREATE TABLE IF NOT EXISTS recipe_methods (
    id        INTEGER PRIMARY KEY,
    operator  TEXT NOT NULL,
    version   INTEGER NOT NULL,
    params    TEXT NOT NULL CHECK (json_valid(params)),
    made_with TEXT NOT NULL,
    UNIQUE (operator, version, params, made_with)
);

-- One row per compact agent: its genome is method(parent's genome, agents.seed). hops: regenerations from
-- the nearest materialised ancestor (a genome stored in full); the store materialises at a bound.
CREATE TABLE IF NOT EXISTS recipes (
    agent_id INTEGER PRIMARY KEY REFERENCES agents(id),
    method   INTEGER NOT NULL REFERENCES recipe_methods(id),
    hops     INTEGER NOT NULL CHECK (hops >= 1)
);

PRAGMA writable_schema = ON;
UPDATE sqlite_schema
    SET sql = replace(sql, 'genome_hash   TEXT REFERENCES genomes(hash),',
                      'genome_hash   TEXT,                         -- genomes(hash), or a recipes row regenerates it')
    WHERE type = 'table' AND name = 'agents';
PRAGMA writable_schema = RESET;

-- The full 64-character hash in an index cost ~80 bytes a child; an 8-character prefix finds an agent by
-- its genome (WHERE substr(genome_hash, 1, 8) = substr(?, 1, 8) AND genome_hash = ?) for a quarter of that.
DROP INDEX IF EXISTS idx_agents_genome_hash;
CREATE INDEX IF NOT EXISTS idx_agents_genome_prefix ON agents(substr(genome_hash, 1, 8));
