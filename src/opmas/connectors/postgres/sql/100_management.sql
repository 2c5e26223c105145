-- Management plane: principals (people, services and agents) with their permissions,
-- issued tokens (revocable by id), and agent liveness / configuration bookkeeping.

CREATE TABLE principals (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'agent')),
    agent_id     TEXT UNIQUE REFERENCES agents (id) ON DELETE CASCADE,
    permissions  TEXT[] NOT NULL DEFAULT '{}',
    secret_hash  TEXT NOT NULL,                -- bcrypt; for agents also the NATS password hash
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tokens (
    jti          TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    issued_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX tokens_principal ON tokens (principal_id);
CREATE INDEX tokens_expires ON tokens (expires_at);

ALTER TABLE agents
    ADD COLUMN config_version         INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN applied_config_version INTEGER,
    ADD COLUMN info                   JSONB NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX agents_status ON agents (status);
