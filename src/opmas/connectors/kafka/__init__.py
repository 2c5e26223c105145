"""Kafka-protocol connectors (Apache Kafka, Redpanda, Tansu): the NATS->Kafka bridge and the archiver."""
