-- OPMAS core schema: agents, rules, findings and the events findings refer to.
-- Raw events are archived in ClickHouse, not here.

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'offline',
    config      JSONB NOT NULL DEFAULT '{}'::jsonb,
    last_seen   TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE rules (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'detection',  -- detection | correlation
    level       TEXT,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    source      TEXT NOT NULL,                       -- the rule's YAML
    path        TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT,
    timestamp   TIMESTAMPTZ,
    type        TEXT,
    data        JSONB NOT NULL
);
CREATE INDEX events_agent_time ON events (agent_id, timestamp);

CREATE TABLE findings (
    id          UUID PRIMARY KEY,
    rule_id     TEXT NOT NULL,
    rule_title  TEXT NOT NULL,
    severity    TEXT NOT NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags        TEXT[] NOT NULL DEFAULT '{}',
    event_ids   TEXT[] NOT NULL,
    agent_id    TEXT,
    group_key   TEXT,
    details     JSONB NOT NULL DEFAULT '{}'::jsonb,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    assignee    TEXT,
    note        TEXT,
    event_time  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX findings_severity ON findings (severity);
CREATE INDEX findings_rule ON findings (rule_id);
CREATE INDEX findings_event_time ON findings (event_time);
CREATE INDEX findings_agent ON findings (agent_id);
CREATE INDEX findings_status ON findings (status);
