"""The console's overview of a time range: findings per severity and bucket, archived events per
second, the top rules, agents and hosts of the findings, and the pipeline's backlog (dead letters,
the engine consumer's pending messages) from JetStream. Every query is bounded: at most
``MAX_BUCKETS`` buckets, ``TOP`` rows per top list."""
from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from nats.errors import Error as NatsError

from opmas.connectors.nats.subjects import DEADLETTER_STREAM, EVENTS_STREAM
from opmas.core.finding import SEVERITIES
from opmas.api.auth import Principal
from opmas.api.db import fetch_all
from opmas.api.deps import get_state, require
from opmas.api.errors import responses
from opmas.api.event_archive import postgres_host
from opmas.api.routes.findings import FINDING_TIME
from opmas.api.state import ApiState
from opmas.api.validation import IsoTime

router = APIRouter(tags=["overview"])

MAX_BUCKETS = 500
TOP = 10
DEFAULT_RANGE = timedelta(hours=24)
JETSTREAM_TIMEOUT = 2.0  # seconds to wait for each JetStream figure before answering null

_IN_RANGE = f"{FINDING_TIME} >= %s AND {FINDING_TIME} < %s"
_BY_SEVERITY = (f"SELECT severity, floor(extract(epoch FROM {FINDING_TIME} - %s) / %s)::int AS bucket,"
                f" count(*) AS n FROM findings WHERE {_IN_RANGE} GROUP BY 1, 2 LIMIT %s")
_TOP_RULES = (f"SELECT rule_id, max(rule_title) AS rule_title, count(*) AS count FROM findings WHERE {_IN_RANGE}"
              " GROUP BY rule_id ORDER BY count DESC, rule_id LIMIT %s")
_TOP_AGENTS = (f"SELECT agent_id, count(*) AS count FROM findings WHERE {_IN_RANGE} AND agent_id IS NOT NULL"
               " GROUP BY agent_id ORDER BY count DESC, agent_id LIMIT %s")
_HOST = postgres_host("details -> 'event'")
_TOP_HOSTS = (f"SELECT {_HOST} AS host, count(*) AS count FROM findings WHERE {_IN_RANGE} AND {_HOST} IS NOT NULL"
              " GROUP BY 1 ORDER BY count DESC, host LIMIT %s")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def time_range(since: datetime | None, until: datetime | None, bucket: int) -> tuple[datetime, datetime, int]:
    """``(since, until, number of buckets)``, in UTC (a time without offset is UTC); 422 for a range
    that is empty, beyond the calendar, or over ``MAX_BUCKETS`` buckets."""
    try:
        until = datetime.now(timezone.utc) if until is None else _utc(until)
        since = until - DEFAULT_RANGE if since is None else _utc(since)
    except OverflowError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="since or until is beyond the calendar")
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="since must be before until")
    buckets = math.ceil((until - since).total_seconds() / bucket)
    if buckets > MAX_BUCKETS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"{buckets} buckets of {bucket} s: at most {MAX_BUCKETS} (a shorter range or "
                                   "a longer bucket)")
    return since, until, buckets


async def _jetstream_figure(state: ApiState, which: str) -> int | None:
    """The dead-letter stream's message count, or the engine consumer's pending messages; None
    when NATS, the stream or the consumer is not there."""
    try:
        if which == "dead_letters":
            info = await asyncio.wait_for(state.js.stream_info(DEADLETTER_STREAM), JETSTREAM_TIMEOUT)
            return int(info.state.messages)
        info = await asyncio.wait_for(state.js.consumer_info(EVENTS_STREAM, state.settings.consumer),
                                      JETSTREAM_TIMEOUT)
        return int(info.num_pending or 0)
    except (NatsError, TimeoutError):  # (JetStream's errors are NATS errors)
        return None


@router.get("/overview", summary="Findings per severity over time, events per second, top rules, agents and "
                                  "hosts, dead letters and consumer lag, for a time range",
            description=f"Buckets of `bucket` seconds from `since`; at most {MAX_BUCKETS} (else 422). Events per "
                        "second come from the ClickHouse archive (an empty list when the API has none); "
                        "`dead_letters` and `consumer_lag` from JetStream (null when unavailable).",
            responses=responses(401, 403))
async def overview(state: ApiState = Depends(get_state),
                   since: IsoTime | None = Query(None, description="from (ISO 8601; default until - 24 h)"),
                   until: IsoTime | None = Query(None, description="to, excluded (ISO 8601; default now)"),
                   bucket: int = Query(3600, ge=60, le=86400, description="seconds per bucket"),
                   _: Principal = Depends(require("findings:read"))) -> dict[str, Any]:
    since, until, buckets = time_range(since, until, bucket)
    starts = [since + timedelta(seconds=i * bucket) for i in range(buckets)]
    in_range = (since, until)
    by_severity, rules, agents, hosts, events, dead_letters, lag = await asyncio.gather(
        fetch_all(state, _BY_SEVERITY, (since, bucket, *in_range, buckets * 100)),
        fetch_all(state, _TOP_RULES, (*in_range, TOP)),
        fetch_all(state, _TOP_AGENTS, (*in_range, TOP)),
        fetch_all(state, _TOP_HOSTS, (*in_range, TOP)),
        state.archive.counts_per_bucket(since, until, bucket) if state.archive is not None else asyncio.sleep(0),
        _jetstream_figure(state, "dead_letters"),
        _jetstream_figure(state, "consumer_lag"))
    counts: dict[str, list[int]] = {severity: [0] * buckets for severity in SEVERITIES}
    for row in by_severity:
        if 0 <= row["bucket"] < buckets:
            counts.setdefault(row["severity"], [0] * buckets)[row["bucket"]] += row["n"]
    rates = []
    if events is not None:
        for i, start in enumerate(starts):
            seconds = (min(start + timedelta(seconds=bucket), until) - start).total_seconds()
            rates.append([start, round(events.get(i, 0) / seconds, 6)])
    return {"since": since, "until": until, "bucket": bucket,
            "findings_by_severity": {severity: [[start, n] for start, n in zip(starts, series)]
                                     for severity, series in counts.items()},
            "events_per_second": rates, "top_rules": rules, "top_agents": agents, "top_hosts": hosts,
            "dead_letters": dead_letters, "consumer_lag": lag}
