"""Retro-hunts run by the API: each one a background task of the API's process over the event archive
(runtime/hunt.py), recorded in the ``hunts`` table, its progress and findings published on
``opmas.hunts.<id>`` (streamed by ``/ws/hunts/{id}``).

A hunt's findings are kept in memory (the first KEPT_FINDINGS, a preview) or, when it was asked to
store them, written to PostgreSQL linked to the hunt (all of them). At most MAX_RUNNING hunts run at
once: each one reads and evaluates in a thread of the process that also serves the API (and, in
``opmas up``, runs the engine). The last KEPT_HUNTS hunts stay in memory; older ones are read from
the table.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from nats.aio.client import Client as Nats

from opmas.connectors.clickhouse.archive import Archive
from opmas.connectors.postgres.sink import HuntRow, PostgresSink
from opmas.connectors.records import FindingRecord
from opmas.core.finding import Finding
from opmas.core.ruleset import RuleSet
from opmas.runtime.hunt import HuntStats, run_hunt

HUNTS_PREFIX = "opmas.hunts."
MAX_RUNNING = 2
KEPT_FINDINGS = 2_000  # per hunt: a preview (a stored hunt keeps every finding in PostgreSQL)
KEPT_HUNTS = 20  # so at most 40,000 findings are held in memory
PROGRESS_INTERVAL = 0.5  # seconds between progress messages
log = logging.getLogger("management")


def hunt_subject(hunt_id: str) -> str:
    """Where a hunt's progress and findings are published."""
    return HUNTS_PREFIX + hunt_id


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@dataclass
class HuntJob:
    """One hunt the API runs: what it was asked, how far it got, what it found."""

    row: HuntRow
    ruleset: RuleSet
    stats: HuntStats = field(default_factory=HuntStats)
    status: str = "running"  # running | done | failed | cancelled
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None

    def view(self) -> dict[str, Any]:
        """The hunt's status object (the API's answer and each progress message)."""
        row, stats = self.row, self.stats
        return {"id": row.id, "status": self.status, "rule_ids": list(row.rule_ids), "since": _iso(row.since),
                "until": _iso(row.until), "agent_id": row.agent_id, "store": row.store,
                "principal_id": row.principal_id, "in_range": stats.in_range, "read": stats.read,
                "findings": stats.findings, "reached": _iso(stats.reached), "error": self.error,
                "findings_kept": len(self.findings), "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at)}


@dataclass
class Hunts:
    """The API process's hunts, newest last."""

    jobs: OrderedDict[str, HuntJob] = field(default_factory=OrderedDict)

    def running(self) -> int:
        return sum(job.status == "running" for job in self.jobs.values())

    def get(self, hunt_id: str) -> HuntJob | None:
        return self.jobs.get(hunt_id)

    def start(self, job: HuntJob, archive: Archive, db_url: str, nc: Nats) -> None:
        """Run ``job`` in the background; forget the oldest finished hunts beyond KEPT_HUNTS."""
        self.jobs[job.row.id] = job
        finished = [key for key, old in self.jobs.items() if old.status != "running"]
        for key in finished[:max(0, len(self.jobs) - KEPT_HUNTS)]:
            del self.jobs[key]
        job.task = asyncio.create_task(_run(job, archive, db_url, nc), name=f"hunt {job.row.id}")

    async def stop_all(self) -> None:
        """Stop every running hunt (after its current batch) and wait for it."""
        running = [job for job in self.jobs.values() if job.task is not None and not job.task.done()]
        for job in running:
            job.stop.set()
        await asyncio.gather(*(job.task for job in running), return_exceptions=True)


async def _run(job: HuntJob, archive: Archive, db_url: str, nc: Nats) -> None:
    """Hunt, keep and publish the findings (and store them if asked), record the outcome."""
    subject, row = hunt_subject(job.row.id), job.row
    sink = PostgresSink(db_url)
    last_progress = 0.0

    async def on_batch(findings: list[Finding]) -> None:
        nonlocal last_progress
        room = KEPT_FINDINGS - len(job.findings)
        for finding in findings[:room]:
            job.findings.append(finding.to_dict())
            await nc.publish(subject, orjson.dumps({"finding": job.findings[-1]}))
        if row.store and findings:
            await sink.write_hunt(row.id, [FindingRecord.of(f) for f in findings])
        if time.monotonic() - last_progress >= PROGRESS_INTERVAL:
            last_progress = time.monotonic()
            await nc.publish(subject, orjson.dumps(job.view()))

    try:
        await sink.begin_hunt(row)
        complete = await run_hunt(archive, job.ruleset, row.since, row.until, row.agent_id, job.stats, on_batch,
                                  stop=job.stop)
        job.status = "done" if complete else "cancelled"
    except Exception as exc:  # noqa: BLE001 - the hunt fails, the API goes on; the reason is recorded
        job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        log.warning("hunt failed", extra={"hunt": row.id, "error": job.error})
    finally:
        job.finished_at = time.time()
        try:
            await sink.end_hunt(row.id, job.status, job.stats.in_range, job.stats.read, job.stats.findings,
                                job.error)
        except Exception as exc:  # noqa: BLE001 - the database away: the in-memory record still answers
            log.warning("hunt outcome not recorded", extra={"hunt": row.id, "error": str(exc)[:200]})
        finally:
            await sink.close()
        await nc.publish(subject, orjson.dumps(job.view()))
