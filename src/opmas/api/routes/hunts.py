"""Retro-hunts over the event archive: start one (it runs in the background, api/hunts.py), read its
progress and findings, cancel it. Live progress: ``/ws/hunts/{id}`` (routes/ws.py)."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import Field, model_validator

from opmas.api.auth import Principal
from opmas.api.db import fetch_all, fetch_one, fetch_page
from opmas.api.deps import Paging, get_state, paging, require
from opmas.api.errors import responses
from opmas.api.hunts import KEPT_FINDINGS, MAX_RUNNING, HuntJob
from opmas.api.routes.findings import FINDING_COLUMNS
from opmas.api.state import ApiState
from opmas.api.validation import ApiModel, IsoTime
from opmas.connectors.postgres.rule_store import stored_name
from opmas.connectors.postgres.sink import HuntRow
from opmas.core.ruleset import RuleSource, load_ruleset

router = APIRouter(tags=["hunts"])

HUNT_COLUMNS = ("id, status, rule_ids, since, until, agent_id, store, principal_id, in_range, read, findings,"
                " error, started_at, finished_at")
HUNT_RULE_NAME = "hunt.yml"  # the file name errors of a rule given as text point at


class HuntIn(ApiModel):
    """What to hunt: the rules given by id, or one rule's text (``yaml``), or (neither) every enabled rule."""

    rule_ids: list[str] | None = Field(None, min_length=1, max_length=1000)
    yaml: str | None = Field(None, min_length=1, max_length=1_000_000,
                             description="a rule's Sigma YAML (a correlation with the rules it names, as "
                                         "YAML documents of one text)")
    since: IsoTime = Field(strict=False, description="start of the range, event time (ISO 8601)")
    until: IsoTime | None = Field(None, strict=False, description="end of the range, excluded (default: now)")
    agent_id: str | None = Field(None, max_length=200, description="only this agent's events")
    store: bool = Field(False, description="store the findings in PostgreSQL, linked to the hunt "
                                           "(needs findings:write)")

    @model_validator(mode="after")
    def one_kind_of_rules(self) -> "HuntIn":
        if self.rule_ids is not None and self.yaml is not None:
            raise ValueError("give rule_ids or yaml, not both")
        return self


async def _sources(state: ApiState, body: HuntIn) -> list[RuleSource]:
    if body.yaml is not None:
        return [RuleSource(HUNT_RULE_NAME, body.yaml)]
    if body.rule_ids is None:
        rows = await fetch_all(state, "SELECT DISTINCT ON (COALESCE(path, id)) id, source, path FROM rules"
                                      " WHERE enabled ORDER BY COALESCE(path, id)")
    else:
        rows = await fetch_all(state, "SELECT DISTINCT ON (COALESCE(path, id)) id, source, path FROM rules"
                                      " WHERE id = ANY(%s) ORDER BY COALESCE(path, id)", (body.rule_ids,))
        missing = set(body.rule_ids) - {r["id"] for r in rows}
        if missing:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {', '.join(sorted(missing)[:10])}")
    return [RuleSource(r["path"] or stored_name(r["id"]), r["source"]) for r in rows]


@router.post("/hunts", status_code=status.HTTP_202_ACCEPTED,
             summary="Start a retro-hunt: rules over the archived events of a time range (runs in the background)",
             responses=responses(400, 401, 403, 404, 422, 429, 503))
async def start_hunt(body: HuntIn, state: ApiState = Depends(get_state),
                     principal: Principal = Depends(require("hunts:run"))) -> dict[str, Any]:
    if body.store and not principal.can("findings:write"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing permission findings:write (to store)")
    if state.archive is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="no event archive: run the API in opmas up, or configure a ClickHouse server")
    if state.hunts.running() >= MAX_RUNNING:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": "10"},
                            detail=f"{MAX_RUNNING} hunts are running: wait for one to end, or cancel one")
    since, until = body.since.timestamp(), (body.until.timestamp() if body.until else time.time())
    if until <= since:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="until must be after since")
    sources = await _sources(state, body)
    settings = state.settings
    ruleset, errors = await asyncio.to_thread(load_ruleset, sources, settings.mappings, settings.lateness)
    refused = [e for e in errors if e.severity == "error"]
    if refused or not ruleset.rules:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail={
            "message": "no rule to hunt with" if not refused else "the rules do not load",
            "errors": [e.to_dict() for e in refused]})
    row = HuntRow(str(uuid.uuid4()), tuple(sorted(rule.id for rule in ruleset.rules)), since, until,
                  body.agent_id, body.store, principal.id)
    job = HuntJob(row, ruleset)
    state.hunts.start(job, state.archive.archive, settings.db_url, state.nc)
    return job.view()


@router.get("/hunts", summary="List hunts, newest first (running ones as far as they got)",
            responses=responses(401, 403))
async def list_hunts(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                     _: Principal = Depends(require("hunts:run"))) -> dict:
    listed = await fetch_page(state, HUNT_COLUMNS, "hunts", [], "started_at DESC, id", page)
    listed["items"] = [_current(state, row) for row in listed["items"]]
    return listed


def _current(state: ApiState, row: dict[str, Any]) -> dict[str, Any]:
    """A hunt's status: this process's live record where it has one, else the table's row."""
    job = state.hunts.get(str(row["id"]))
    return job.view() if job is not None else {**row, "id": str(row["id"])}


async def _hunt_row(state: ApiState, hunt_id: uuid.UUID) -> dict[str, Any]:
    row = await fetch_one(state, f"SELECT {HUNT_COLUMNS} FROM hunts WHERE id = %s", (hunt_id,))
    if row is None and state.hunts.get(str(hunt_id)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no hunt {hunt_id}")
    return row or {"id": hunt_id}


@router.get("/hunts/{hunt_id}", summary="A hunt's status and progress", responses=responses(401, 403, 404))
async def get_hunt(hunt_id: uuid.UUID, state: ApiState = Depends(get_state),
                   _: Principal = Depends(require("hunts:run"))) -> dict[str, Any]:
    return _current(state, await _hunt_row(state, hunt_id))


@router.get("/hunts/{hunt_id}/findings",
            summary=f"A hunt's findings: all those it stored, else the first {KEPT_FINDINGS} while this process "
                    "keeps the hunt",
            responses=responses(401, 403, 404, 410))
async def hunt_findings(hunt_id: uuid.UUID, state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                        _: Principal = Depends(require("hunts:run"))) -> dict[str, Any]:
    row = await _hunt_row(state, hunt_id)
    job = state.hunts.get(str(hunt_id))
    if row.get("store") or (job is not None and job.row.store):  # every finding, in PostgreSQL
        return await fetch_page(state, FINDING_COLUMNS, "findings JOIN hunt_findings ON finding_id = id",
                                [("hunt_id = %s", hunt_id)], "COALESCE(event_time, created_at), id", page)
    if job is None:
        raise HTTPException(status.HTTP_410_GONE,
                            detail=f"hunt {hunt_id} did not store its findings, and they are no longer kept")
    items = job.findings[page.offset:page.offset + page.limit]
    return {"items": items, "total": len(job.findings), "limit": page.limit, "offset": page.offset}


@router.delete("/hunts/{hunt_id}", summary="Cancel a running hunt (it stops after its current batch)",
               responses=responses(401, 403, 404, 409))
async def cancel_hunt(hunt_id: uuid.UUID, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("hunts:run"))) -> dict[str, Any]:
    job = state.hunts.get(str(hunt_id))
    if job is None:
        await _hunt_row(state, hunt_id)  # 404 if unknown
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"hunt {hunt_id} is not running in this process")
    if job.status != "running":
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"hunt {hunt_id} has ended ({job.status})")
    job.stop.set()
    if job.task is not None:
        await asyncio.shield(job.task)
    return job.view()
