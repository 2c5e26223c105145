"""Suppression: a flood of identical findings becomes one finding plus one count.

A rule (detection or correlation) with ``suppress: {by: [fields], for: DURATION}``
reports, per rule and per value of the ``by`` fields (missing fields count as empty):

* the first finding at event time ``t`` at once (once ``t`` is behind the
  watermark), with ``details.suppression = {by, until}``; it opens the window
  ``[t, t + DURATION)``;
* every further finding of that key inside the window is suppressed: counted,
  and its event ids kept (up to ``MAX_IDS``);
* when the watermark passes the window's end and something was suppressed, ONE
  summary finding: id ``finding_id(rule, [], "suppressed" + key + t)``, title
  ``"<first title> (N more suppressed)"``, ``details.suppressed = {count, of
  (the first finding's id), by, window, first, last}``, event ids of the
  suppressed findings.

Findings are taken in event-time order ``(time, finding id)`` and only once
behind the watermark, so which finding opens a window and every count are the
same whatever the arrival order within the allowed lateness. Findings without an
event time are not suppressed.
"""
from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import Any

from opmas.core.correlation.spec import Suppression
from opmas.core.event import format_time, parse_time
from opmas.core.finding import Finding, finding_id

MAX_IDS = 100


def finding_from_dict(data: dict[str, Any]) -> Finding:
    """Inverse of Finding.to_dict (snapshots)."""
    return Finding(**{**data, "timestamp": parse_time(data.get("timestamp"))})


def suppression_key(config: Suppression, fields: dict[str, Any]) -> str:
    """The suppression key of a finding from its fields (event fields or correlation group)."""
    return "\x1f".join("" if fields.get(f) is None else str(fields.get(f)) for f in config.by)


class Suppressor:
    """Suppression windows of every rule that has ``suppress``; state as plain data."""

    def __init__(self, configs: dict[str, Suppression], state: dict[str, Any] | None = None):
        self.configs = configs
        # (time, finding id, key, arrival number, finding): the arrival number only keeps heapq from
        # comparing two findings (one event id twice); it is not part of snapshots.
        self.pending: list[tuple[float, str, str, int, Finding]] = []
        self._arrivals = itertools.count()
        # rule id -> by key -> [start, until, suppressed count, last time, event ids, first finding dict]
        self.windows: dict[str, OrderedDict[str, list]] = {rule_id: OrderedDict() for rule_id in configs}
        if state:
            self._restore(state)

    def by_key(self, rule_id: str, fields: dict[str, Any]) -> str:
        """The suppression key of a finding of ``rule_id`` from its fields."""
        return suppression_key(self.configs[rule_id], fields)

    def offer(self, finding: Finding, at: float, key: str) -> None:
        """Hold a finding decided at event time ``at`` until the watermark passes it."""
        heapq.heappush(self.pending, (at, finding.id, key, next(self._arrivals), finding))

    def advance(self, watermark: float) -> list[Finding]:
        """Findings (first of a window, or summaries) that the watermark makes final."""
        out: list[Finding] = []
        pending, previous = self.pending, None
        while pending and pending[0][0] < watermark:
            at, fid, key, _, finding = heapq.heappop(pending)
            if fid == previous:  # the same finding offered twice (a replayed event, or one event id reused)
                continue
            previous = fid
            out.extend(self._take(at, key, finding))
        for rule_id, windows in self.windows.items():
            while windows:
                key, window = next(iter(windows.items()))
                if window[1] > watermark:
                    break
                del windows[key]
                if window[2]:
                    out.append(self._summary(rule_id, key, window))
        return out

    def _take(self, at: float, key: str, finding: Finding) -> list[Finding]:
        rule_id = finding.rule_id
        windows = self.windows[rule_id]
        out = []
        window = windows.get(key)
        if window is not None:
            if at < window[1]:
                window[2] += 1
                window[3] = at
                if len(window[4]) < MAX_IDS:
                    window[4].extend(finding.event_ids[:MAX_IDS - len(window[4])])
                return out
            del windows[key]
            if window[2]:
                out.append(self._summary(rule_id, key, window))
        until = at + self.configs[rule_id].seconds
        finding.details["suppression"] = {"by": self._by(rule_id, key), "until": format_time(until)}
        first = {"id": finding.id, "rule_title": finding.rule_title, "severity": finding.severity,
                 "tags": finding.tags, "title": finding.title, "description": finding.description,
                 "agent_id": finding.agent_id, "group_key": finding.group_key}
        windows[key] = [at, until, 0, at, [], first]
        out.append(finding)
        return out

    def _by(self, rule_id: str, key: str) -> dict[str, str]:
        fields = self.configs[rule_id].by
        return dict(zip(fields, key.split("\x1f"))) if fields else {}

    def _summary(self, rule_id: str, key: str, window: list) -> Finding:
        start, until, count, last, ids, first = window
        return Finding(
            id=finding_id(rule_id, [], f"suppressed\x1f{key}\x1f{start!r}"),
            rule_id=rule_id,
            rule_title=first["rule_title"],
            severity=first["severity"],
            tags=list(first["tags"]),
            event_ids=list(ids),
            timestamp=last,
            title=f"{first['title']} ({count} more suppressed)",
            description=first["description"],
            agent_id=first["agent_id"],
            group_key=first["group_key"],
            details={"suppressed": {
                "count": count, "of": first["id"], "by": self._by(rule_id, key),
                "window": {"start": format_time(start), "end": format_time(until)},
                "last": format_time(last), "event_ids_truncated": count > len(ids),
            }},
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "pending": [[at, key, f.to_dict()] for at, _, key, _, f in sorted(self.pending, key=lambda p: p[:4])],
            "windows": {rule_id: [[key, *window] for key, window in windows.items()]
                        for rule_id, windows in self.windows.items() if windows},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        for at, key, data in state.get("pending", []):
            finding = finding_from_dict(data)
            if finding.rule_id in self.configs:
                self.offer(finding, float(at), key)
        for rule_id, rows in state.get("windows", {}).items():
            if rule_id in self.windows:
                for key, start, until, count, last, ids, first in rows:
                    self.windows[rule_id][key] = [float(start), float(until), int(count), float(last), list(ids), first]

    @property
    def size(self) -> int:
        """Findings held plus open windows."""
        return len(self.pending) + sum(len(w) for w in self.windows.values())
