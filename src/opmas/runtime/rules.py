"""Loading the rule set the engine runs, and deciding whether a reloaded set may replace it."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from opmas.core.errors import RuleError
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset, sources_from_paths
from opmas.connectors.postgres.rule_store import stored_rule_sources
from opmas import metrics

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


class RuleReloads:
    """The one reload protocol of every runtime: load the rule files and stored rules again; a set
    with errors is refused (the running set stays); otherwise ``apply(sources, ruleset)`` swaps it
    in. Answers ``opmas.engine.reload`` requests (``on_request``) and file changes alike."""

    def __init__(self, files: RuleFiles, apply: Callable[[list[RuleSource], RuleSet], Awaitable[None]]):
        self.files = files
        self.apply = apply
        self.count = 0  # rules of the running set

    async def load(self, context: str = "startup") -> tuple[list[RuleSource], RuleSet]:
        """The first rule set (errors logged, bad rules left out)."""
        sources, ruleset, errors = await asyncio.to_thread(self.files.load)
        log_errors(errors, context)
        self._running(ruleset)
        return sources, ruleset

    async def reload(self) -> dict[str, Any]:
        """Load again and swap in; the answer a reload request gets."""
        sources, ruleset, errors = await asyncio.to_thread(self.files.load)
        fatal = blocking_errors(errors)
        if fatal:
            metrics.RULE_RELOADS.labels("refused").inc()
            log_errors(fatal, "reload refused, the running rule set stays")
            return {"ok": False, "errors": [str(e) for e in fatal], "rules": self.count}
        await self.apply(sources, ruleset)
        metrics.RULE_RELOADS.labels("applied").inc()
        self._running(ruleset)
        log.info("rules reloaded", extra={"rules": len(ruleset.rules), "warnings": len(errors)})
        return {"ok": True, "rules": len(ruleset.rules), "warnings": [str(e) for e in errors]}

    async def on_request(self, msg: Any) -> None:
        """A NATS reload request: reload, and reply with the answer."""
        try:
            result = await self.reload()
        except Exception as exc:  # a reload must never take the runtime down
            log.exception("rule reload failed")
            result = {"ok": False, "errors": [f"{type(exc).__name__}: {exc}"]}
        if msg.reply:
            await msg.respond(orjson.dumps(result))

    def _running(self, ruleset: RuleSet) -> None:
        self.count = len(ruleset.rules)
        metrics.RULES_LOADED.set(self.count)


def blocking_errors(errors: Sequence[RuleError]) -> list[RuleError]:
    """The errors that refuse a reloaded rule set (warnings do not)."""
    return [e for e in errors if e.severity == "error"]


def log_errors(errors: Sequence[RuleError], context: str) -> None:
    for error in errors:
        log.log(logging.ERROR if error.severity == "error" else logging.WARNING, str(error), extra={
            "context": context, "file": error.file, "line": error.line, "rule_id": error.rule_id})
