-- Who triaged a finding, when, and to what: a row per change made through the management API
-- (PATCH /findings/{id} and POST /findings/triage), written by the statement that makes the change.
-- ``status``, ``assignee`` and ``note`` are the finding's values after the change; ``changed`` names
-- the fields the change set. ``principal_id`` is kept as text (no foreign key): the history outlives
-- a deleted principal.

CREATE TABLE finding_history (
    id           BIGSERIAL PRIMARY KEY,
    finding_id   UUID NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    principal_id TEXT NOT NULL,
    status       TEXT NOT NULL,
    assignee     TEXT,
    note         TEXT,
    changed      TEXT[] NOT NULL
);
CREATE INDEX finding_history_finding ON finding_history (finding_id, at, id);
