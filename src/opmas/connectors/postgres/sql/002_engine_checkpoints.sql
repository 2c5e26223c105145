-- The pipeline's checkpoints: for each durable consumer, the last JetStream sequence whose
-- effects are in every sink, and the partition processors' state at exactly that point.
-- Written in the same transaction as that batch's findings.

CREATE TABLE engine_checkpoints (
    consumer    TEXT PRIMARY KEY,
    stream_seq  BIGINT NOT NULL,
    layout      JSONB NOT NULL,          -- partitions and partition key the state belongs to
    state       BYTEA NOT NULL,          -- JSON: {partition: Processor.snapshot()}
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
