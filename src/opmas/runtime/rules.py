"""Loading the rule set the engine runs, and deciding whether a reloaded set may replace it."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opmas.core.correlation.partitioning import split_by_partitioning
from opmas.core.errors import RuleError
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset, sources_from_paths
from opmas.connectors.postgres.rule_store import stored_rule_sources

log = logging.getLogger("opmas.rules")


@dataclass(frozen=True)
class RuleFiles:
    """Where the rules (and optional logsource mappings) come from."""

    paths: tuple[Path, ...]
    mappings: tuple[Path, ...] = ()
    db_url: str | None = None  # also the enabled rules added through the management API
    lateness: float | None = None  # allowed out-of-orderness of correlation windows, seconds

    def load(self) -> tuple[list[RuleSource], RuleSet, list[RuleError]]:
        """The sources read now, every good rule, and the errors of the bad ones."""
        sources = sources_from_paths(list(self.paths))
        if self.db_url:
            sources += stored_rule_sources(self.db_url)
        ruleset, errors = load_ruleset(sources, list(self.mappings), self.lateness)
        return sources, ruleset, errors


def blocking_errors(errors: Sequence[RuleError]) -> list[RuleError]:
    """The errors that refuse a reloaded rule set (warnings do not)."""
    return [e for e in errors if e.severity == "error"]


def log_errors(errors: Sequence[RuleError], context: str) -> None:
    for error in errors:
        log.log(logging.ERROR if error.severity == "error" else logging.WARNING, str(error), extra={
            "context": context, "file": error.file, "line": error.line, "rule_id": error.rule_id})


def warn_split_correlations(ruleset: RuleSet, partition_key: str, partitions: int) -> None:
    """Warn when the rule set has correlations that several partitions each see only part of."""
    split = split_by_partitioning(ruleset, partition_key) if partitions > 1 else []
    if split:
        log.warning("correlations see each partition separately", extra={
            "partition_key": partition_key, "partitions": partitions, "rule_ids": [c.rule_id for c in split]})
