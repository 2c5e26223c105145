"""Events: submit (published to JetStream on opmas.events.<agent_id>), get and list the stored ones.

PostgreSQL holds the events that findings refer to, the ClickHouse archive every event the engine
took in. ``GET`` reads the archive when the API has one (``opmas.api.event_archive``: inside
``opmas up``, or given a ClickHouse server URL), else PostgreSQL only.
"""
from __future__ import annotations

import re
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from nats.errors import Error as NatsError
from nats.js.errors import NoStreamResponseError
from pydantic import Field, field_validator

from opmas.connectors.nats.subjects import events_subject
from opmas.core.event import content_id, format_time, parse_time
from opmas.api.auth import Principal
from opmas.api.db import fetch_one, fetch_page
from opmas.api.deps import Paging, get_state, paging, require
from opmas.api.errors import responses
from opmas.api.event_archive import postgres_host
from opmas.api.routes.agents import AGENT_ID_PATTERN, API_AGENT_ID
from opmas.api.state import ApiState
from opmas.api.validation import RAW, ApiModel, IsoTime, as_pipeline_reads

router = APIRouter(tags=["events"])

MAX_EVENTS_PER_REQUEST = 1000
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})\Z")
FIRST_EPOCH, LAST_EPOCH_MS = -62135596800, 253402300799999  # 0001-01-01 in seconds, 9999-12-31 in milliseconds
EVENT_COLUMNS = "id, agent_id, timestamp, type, data"


class EventIn(ApiModel):
    """An event; its ``data`` may hold NUL characters (the pipeline stores it without them), no other
    field may."""

    raw_fields = frozenset({"data"})

    id: str | None = Field(None, min_length=1, max_length=256)
    agent_id: str | None = Field(None, pattern=AGENT_ID_PATTERN,
                                 description="defaults to the calling agent, or 'api' for users (another "
                                             "one needs agents:admin)")
    timestamp: (Annotated[float, Field(ge=FIRST_EPOCH, le=LAST_EPOCH_MS, allow_inf_nan=False)]
                | Annotated[str, Field(min_length=1, max_length=64,
                                       json_schema_extra={"format": "date-time", "pattern": "^(?!0000)"})]
                | None) = Field(None, description="RFC 3339 (years 1-9999), or a number: epoch seconds (below "
                                                  "1e11) or milliseconds; default now")
    type: str = Field("event", min_length=1, max_length=256)
    data: dict[str, Any] = Field(json_schema_extra=RAW)

    @field_validator("data")
    @classmethod
    def readable(cls, value: dict[str, Any]) -> dict[str, Any]:
        return as_pipeline_reads(value)

    @field_validator("timestamp")
    @classmethod
    def parseable(cls, value: float | str | None) -> float | str | None:
        readable = value is None or (isinstance(value, float) and parse_time(value) is not None)
        if isinstance(value, str) and RFC3339.match(value):
            value = value.upper()  # 't' and 'z' are RFC 3339 too
            readable = parse_time(value) is not None
        if not readable:
            shown = value if isinstance(value, float) else f"{value[:64]!r}{'...' if len(value) > 64 else ''}"
            raise ValueError(f"cannot read {shown} as a time: expected RFC 3339 such as 2026-01-31T12:00:00Z, "
                             "or epoch seconds (or milliseconds) as a number")
        return value


def envelope(event: EventIn, principal: Principal) -> dict[str, Any]:
    """The OPMAS envelope for a submitted event, its agent fixed by who submits it: an agent's own,
    else ``api``, or another one chosen by a principal holding agents:admin."""
    agent_id = event.agent_id
    if principal.kind == "agent":
        if agent_id not in (None, principal.agent_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                detail=f"agent {principal.agent_id} may publish only its own events")
        agent_id = principal.agent_id
    elif agent_id not in (None, API_AGENT_ID) and not principal.can("agents:admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"publishing as agent {agent_id} needs agents:admin (leave agent_id out: "
                                   f"'{API_AGENT_ID}')")
    agent_id = agent_id or API_AGENT_ID
    timestamp = format_time(parse_time(event.timestamp) if event.timestamp is not None else time.time())
    out = {"agent_id": agent_id, "timestamp": timestamp, "type": event.type, "data": event.data}
    out["id"] = event.id or content_id(out)
    return out


@router.post("/events", status_code=status.HTTP_202_ACCEPTED,
             summary="Submit one event or a list; each is stored by JetStream before the answer",
             responses=responses(400, 401, 403))
async def submit_events(body: EventIn | Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]
                        = Body(...), state: ApiState = Depends(get_state),
                        principal: Principal = Depends(require("events:publish"))) -> dict:
    events = body if isinstance(body, list) else [body]
    if not 1 <= len(events) <= MAX_EVENTS_PER_REQUEST:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"send between 1 and {MAX_EVENTS_PER_REQUEST} events per request")
    payloads = [(env, orjson.dumps(env)) for env in (envelope(e, principal) for e in events)]
    for env, payload in payloads:  # checked before any is published
        if len(payload) > state.nc.max_payload:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                detail=f"event {env['id']} is {len(payload)} bytes as an envelope, over NATS'"
                                       f" maximum message size of {state.nc.max_payload} bytes")
    try:
        for env, payload in payloads:
            await state.js.publish(events_subject(env["agent_id"]), payload, headers={"Nats-Msg-Id": env["id"]})
    except NoStreamResponseError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="no JetStream stream takes opmas.events.> (is the pipeline running?)") from exc
    except (NatsError, TimeoutError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"NATS: {exc!r}") from exc
    return {"accepted": len(payloads), "ids": [env["id"] for env, _ in payloads]}


@router.get("/events", summary="List events by agent, type, host and time range: every archived event when the API "
                                "reads the ClickHouse archive, else only those findings refer to",
            responses=responses(401, 403))
async def list_events(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                      agent_id: str | None = None, type_: str | None = Query(None, alias="type"),
                      since: IsoTime | None = Query(None, description="event time >= (ISO 8601)"),
                      until: IsoTime | None = Query(None, description="event time < (ISO 8601)"),
                      host: str | None = Query(None, min_length=1, max_length=255,
                                               description="the host the event's data names (EVTX "
                                                           "Event.System.Computer, else host.name, "
                                                           "host.hostname, hostname or host)"),
                      _: Principal = Depends(require("events:read"))) -> dict:
    if state.archive is not None:
        return await state.archive.page(page, agent_id, type_, since, until, host)
    filters = [("agent_id = %s", agent_id), ("type = %s", type_),
               ("timestamp >= %s", since), ("timestamp < %s", until), (f"{postgres_host('data')} = %s", host)]
    return await fetch_page(state, EVENT_COLUMNS, "events", filters, "timestamp DESC NULLS LAST, id", page)


@router.get("/events/{event_id}", summary="One event: one a finding refers to, or (when the API reads the "
                                           "ClickHouse archive) any archived event",
            responses=responses(401, 403, 404))
async def get_event(event_id: str, state: ApiState = Depends(get_state),
                    _: Principal = Depends(require("events:read"))) -> dict:
    row = await fetch_one(state, f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,))
    if row is None and state.archive is not None:
        row = await state.archive.get(event_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no stored event {event_id}")
    return row
