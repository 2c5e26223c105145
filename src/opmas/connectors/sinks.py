"""Finding sinks: where the findings PostgreSQL stored for the first time are announced.

A sink is one folder of ``opmas.connectors`` whose module has ``build(target) -> FindingSink``,
named in ``SINKS``; users select it with ``--sink NAME:TARGET``, ``sinks:`` in the YAML file or
``OPMAS_SINKS``. Every runtime announces through ``opmas.runtime.outputs.announce``: each sink's
``write`` is retried on its ``errors`` while it fails, and a finding leaves the PostgreSQL outbox
only once every sink holds it, so a crash in between announces it again (at-least-once; a
finding's id is the same every time, for consumers to drop repeats).
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

from opmas.connectors.records import FindingRecord

# sink name -> module with ``build(target: str) -> FindingSink``
SINKS: dict[str, str] = {
    "file": "opmas.connectors.jsonl",
}


class FindingSink(Protocol):
    """Somewhere findings are announced to."""

    name: str  # in logs, retries and metrics
    errors: tuple[type[BaseException], ...]  # what a retry may mend (an unreachable server, a full disk)

    async def open(self) -> None:
        """Get ready; raise at once for what no retry can mend (a bad path, a refused permission)."""

    async def write(self, findings: Sequence[FindingRecord]) -> None:
        """Hold ``findings`` durably before returning (the same findings again: harmless)."""

    async def close(self) -> None:
        """Release what ``open`` took."""


class SinkError(ValueError):
    """A sink specification names no known sink, or its target is unusable."""


def build_sinks(specs: Sequence[str]) -> list[FindingSink]:
    """The sinks of ``NAME:TARGET`` specifications, e.g. ``file:/var/log/opmas/findings.jsonl``."""
    sinks = []
    for spec in specs:
        name, sep, target = spec.partition(":")
        if not sep or not target or name not in SINKS:
            raise SinkError(f"sink {spec!r}: expected NAME:TARGET with NAME one of {', '.join(sorted(SINKS))}")
        sinks.append(importlib.import_module(SINKS[name]).build(target))
    return sinks
