"""OPMAS agents: the SDK (``SecurityAgent``) and the agents built on it (file tailer, syslog receiver)."""
