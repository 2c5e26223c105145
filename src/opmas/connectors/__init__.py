"""Sources and sinks: NATS/JetStream, files, PostgreSQL, ClickHouse, Kafka/Faust."""
