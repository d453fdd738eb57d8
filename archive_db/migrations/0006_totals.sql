-- 0006: running totals of the agents table, kept by triggers, so that status, resume and the operator
-- statistics read a few rows instead of scanning every agent (10^7 agents: seconds per scan).
-- One row per (operator, model, root or child, status): how many agents, how many of them are duplicates,
-- their tokens and cost. agents_by_status counts, usage totals and operator_success read it.
CREATE TABLE IF NOT EXISTS agent_totals (
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

INSERT INTO agent_totals(operator, model, is_child, status, agents, duplicates, tokens, cost)
SELECT operator, COALESCE(model, 'none'), parent_id IS NOT NULL, status, COUNT(*), SUM(duplicate_of IS NOT NULL),
       SUM(tokens_in + tokens_out), SUM(cost)
FROM agents GROUP BY 1, 2, 3, 4;

CREATE TRIGGER IF NOT EXISTS agent_totals_insert AFTER INSERT ON agents
BEGIN
    INSERT INTO agent_totals(operator, model, is_child, status, agents, duplicates, tokens, cost)
    VALUES (NEW.operator, COALESCE(NEW.model, 'none'), NEW.parent_id IS NOT NULL, NEW.status, 1,
            NEW.duplicate_of IS NOT NULL, NEW.tokens_in + NEW.tokens_out, NEW.cost)
    ON CONFLICT(operator, model, is_child, status) DO UPDATE SET
        agents = agents + 1, duplicates = duplicates + excluded.duplicates, tokens = tokens + excluded.tokens,
        cost = cost + excluded.cost;
END;

CREATE TRIGGER IF NOT EXISTS agent_totals_update
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

CREATE TRIGGER IF NOT EXISTS agent_totals_delete AFTER DELETE ON agents
BEGIN
    UPDATE agent_totals SET agents = agents - 1, duplicates = duplicates - (OLD.duplicate_of IS NOT NULL),
        tokens = tokens - (OLD.tokens_in + OLD.tokens_out), cost = cost - OLD.cost
    WHERE operator = OLD.operator AND model = COALESCE(OLD.model, 'none') AND is_child = (OLD.parent_id IS NOT NULL)
      AND status = OLD.status;
END;

-- The archive's size: the elites table's row count, kept the same way (one row).
CREATE TABLE IF NOT EXISTS elite_totals (id INTEGER PRIMARY KEY CHECK (id = 1), elites INTEGER NOT NULL);
INSERT INTO elite_totals(id, elites) SELECT 1, COUNT(*) FROM elites;
CREATE TRIGGER IF NOT EXISTS elite_totals_insert AFTER INSERT ON elites
BEGIN
    UPDATE elite_totals SET elites = elites + 1 WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS elite_totals_delete AFTER DELETE ON elites
BEGIN
    UPDATE elite_totals SET elites = elites - 1 WHERE id = 1;
END;
