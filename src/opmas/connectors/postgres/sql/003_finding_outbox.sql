-- Findings stored but not yet announced on NATS (opmas.findings.<severity>): a row is written in the
-- transaction that first stores its finding, and removed once the finding's publication is
-- acknowledged. A finding stored again (a replayed log) gets no row and is not announced again;
-- what a crash left here is announced at the next start.

CREATE TABLE finding_outbox (
    id          UUID PRIMARY KEY REFERENCES findings (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
