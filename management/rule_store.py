"""Rules added through the API live in PostgreSQL (``rules`` table); the engine loads the
enabled ones next to its rule files. This is the one reader of that table for the engine."""
from __future__ import annotations

import psycopg

from engine.ruleset import RuleSource

STORED_PREFIX = "rules:"  # RuleSource name of a stored rule: "rules:<id>"
_ENABLED = "SELECT id, source FROM rules WHERE enabled ORDER BY id"


def stored_name(rule_id: str) -> str:
    return f"{STORED_PREFIX}{rule_id}"


def stored_rule_sources(db_url: str) -> list[RuleSource]:
    """The enabled API rules as rule sources (blocking; run it in a thread from async code)."""
    with psycopg.connect(db_url) as conn:
        return [RuleSource(stored_name(rule_id), source) for rule_id, source in conn.execute(_ENABLED)]
