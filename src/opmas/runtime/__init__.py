"""The streaming runtime: JetStream source -> partition processors -> ClickHouse, NATS, PostgreSQL sinks."""
