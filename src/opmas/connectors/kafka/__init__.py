"""Kafka-protocol connectors (Apache Kafka, Redpanda, Tansu): the events topic's records, its creation, the
clients' security, the events sink (the bridge's) and the topic source (the archiver's)."""
