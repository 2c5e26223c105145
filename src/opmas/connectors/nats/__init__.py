"""NATS / JetStream: the events source, the findings and dead-letter publishers."""
