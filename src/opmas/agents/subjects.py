"""The NATS subjects of one agent (events: ``opmas.connectors.nats.subjects.events_subject``)."""
from __future__ import annotations


def control_subject(agent_id: str) -> str:
    """Where management sends an agent its configuration."""
    return f"opmas.control.{agent_id}"


def status_subject(agent_id: str) -> str:
    """Where an agent sends its heartbeats."""
    return f"opmas.status.{agent_id}"


def inbox_prefix(agent_id: str) -> str:
    """The reply-inbox prefix an agent connects with, so NATS permissions can let it read only its
    own replies (JetStream acknowledgements)."""
    return f"_INBOX_{agent_id}"
