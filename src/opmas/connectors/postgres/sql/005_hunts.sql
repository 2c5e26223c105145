-- Retro-hunts (runtime/hunt.py): who ran which rules over which archived range, and (for stored
-- hunts) the findings each gave. A finding live processing already stored keeps its row: the same
-- events give the same finding id, and the hunt only links to it.

CREATE TABLE hunts (
    id           UUID PRIMARY KEY,
    principal_id TEXT,                          -- NULL: run from the command line
    rule_ids     TEXT[] NOT NULL,
    since        TIMESTAMPTZ NOT NULL,
    until        TIMESTAMPTZ NOT NULL,
    agent_id     TEXT,
    store        BOOLEAN NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled', 'interrupted')),
    in_range     BIGINT NOT NULL DEFAULT 0,
    read         BIGINT NOT NULL DEFAULT 0,
    findings     BIGINT NOT NULL DEFAULT 0,
    error        TEXT,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ
);
CREATE INDEX hunts_started ON hunts (started_at);

CREATE TABLE hunt_findings (
    hunt_id    UUID NOT NULL REFERENCES hunts (id) ON DELETE CASCADE,
    finding_id UUID NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
    PRIMARY KEY (hunt_id, finding_id)
);
CREATE INDEX hunt_findings_finding ON hunt_findings (finding_id);
