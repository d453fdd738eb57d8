-- 0004: what an agent did with the model gateway during an evaluation (openended.gateway): its usage and
-- its transcript (request bodies and answers, truncated; never a header or a key). One row per evaluation
-- that had the gateway; the tokens and cost are also added to the agent's row.
CREATE TABLE IF NOT EXISTS transcripts (
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
CREATE INDEX IF NOT EXISTS transcripts_agent ON transcripts(agent_id);
