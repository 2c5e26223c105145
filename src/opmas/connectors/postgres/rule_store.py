"""Rules in PostgreSQL (``rules`` table): the ones added through the API (``path`` NULL), which the
engine loads next to its rule files, and a read-only copy of the rule files (``path`` set) so
the API lists every rule the engine runs."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg

from opmas.core.ruleset import RuleSource, load_ruleset, sources_from_paths

STORED_PREFIX = "rules:"  # RuleSource name of a stored rule: "rules:<id>"
_ENABLED = "SELECT id, source FROM rules WHERE enabled AND path IS NULL ORDER BY id"


def stored_name(rule_id: str) -> str:
    return f"{STORED_PREFIX}{rule_id}"


def stored_rule_sources(db_url: str) -> list[RuleSource]:
    """The enabled API rules as rule sources (blocking; run it in a thread from async code)."""
    with psycopg.connect(db_url) as conn:
        return [RuleSource(stored_name(rule_id), source) for rule_id, source in conn.execute(_ENABLED)]


def file_rule_rows(paths: Sequence[Path]) -> list[tuple]:
    """``(id, title, kind, level, source, path)`` of every good rule in the rule files (blocking);
    ``source`` is the text of the rule's file."""
    sources = sources_from_paths([p for p in paths if Path(p).exists()])
    texts = {s.name: s.text for s in sources}
    ruleset, _ = load_ruleset(sources)
    return [(r.id, r.title, r.kind, r.level, texts[r.source], r.source) for r in ruleset.rules]


async def sync_file_rules(conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
    """Replace the table's copy of the rule files (an API rule keeps an id it already holds)."""
    async with conn.transaction():
        await conn.execute("DELETE FROM rules WHERE path IS NOT NULL")
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO rules (id, title, kind, level, source, path) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING", rows)
