"""Findings: list with filters, text search and sorting, get, and triage (status
open/acknowledged/resolved, assignee, note), one finding or many at once; each triage change is
recorded in ``finding_history`` (who, when, the values after it) by the statement that makes it."""
from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import ConfigDict, Field, Strict, model_validator

from opmas.core.finding import SEVERITIES
from opmas.api.auth import Principal
from opmas.api.db import fetch_all, fetch_one, fetch_page
from opmas.api.deps import Paging, get_state, paging, require
from opmas.api.errors import responses
from opmas.api.state import ApiState
from opmas.api.validation import ApiModel, IsoTime

router = APIRouter(tags=["findings"])

FINDING_COLUMNS = ("id, rule_id, rule_title, severity, title, description, tags, event_ids, agent_id,"
                   " group_key, details, status, assignee, note, event_time, created_at, updated_at")
Status = Literal["open", "acknowledged", "resolved"]
Severity = Literal[SEVERITIES]
MAX_TRIAGE = 500  # findings per POST /findings/triage
MAX_HISTORY = 1000  # changes GET /findings/{id}/history lists (the oldest)
FINDING_TIME = "COALESCE(event_time, created_at)"
# a severity's rank (informational 1 ... critical 5; 0 for any other text): code constants only
SEVERITY_RANK = ("COALESCE(array_position(ARRAY[" + ", ".join(f"'{s}'" for s in SEVERITIES) + "]::text[], severity), 0)")
SORTS = {
    "time": f"{FINDING_TIME}, id",
    "-time": f"{FINDING_TIME} DESC, id",
    "severity": f"{SEVERITY_RANK}, {FINDING_TIME} DESC, id",
    "-severity": f"{SEVERITY_RANK} DESC, {FINDING_TIME} DESC, id",
    "rule": f"lower(rule_title), rule_title, rule_id, {FINDING_TIME} DESC, id",
    "-rule": f"lower(rule_title) DESC, rule_title DESC, rule_id DESC, {FINDING_TIME} DESC, id",
}
Sort = Literal[tuple(SORTS)]
# q: a case-insensitive substring of any of these columns (one parameter: the LIKE pattern)
TEXT_SEARCH = ("EXISTS (SELECT FROM unnest(ARRAY[title, rule_title, description, rule_id, agent_id]) AS searched(text)"
               " WHERE searched.text ILIKE %s)")


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class FindingUpdate(ApiModel):
    """The fields given change; ``assignee`` or ``note`` given as null are cleared."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    status: Status = Field(None, description="cannot be null")  # type: ignore[assignment]  # absent: unchanged
    assignee: str | None = Field(None, max_length=200)
    note: str | None = Field(None, max_length=10000)

    @model_validator(mode="after")
    def something(self) -> "FindingUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of status, assignee, note")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null (open, acknowledged or resolved)")
        return self


class FindingTriage(FindingUpdate):
    """Several findings triaged alike: their ids, and the fields to change as in ``FindingUpdate``."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 2})

    ids: list[Annotated[uuid.UUID, Strict(False)]] = Field(min_length=1, max_length=MAX_TRIAGE)

    @model_validator(mode="after")
    def something(self) -> "FindingTriage":  # (replaces FindingUpdate's: ``ids`` is no change)
        if not self.model_fields_set - {"ids"}:
            raise ValueError("give at least one of status, assignee, note")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null (open, acknowledged or resolved)")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set - {"ids"})


async def triage(state: ApiState, ids: list[uuid.UUID], changes: dict[str, Any],
                 principal: Principal) -> list[dict[str, Any]]:
    """Set ``changes`` (column names: FindingUpdate's fields) on the findings of ``ids`` that exist and
    record each change in ``finding_history``, in one statement; returns the changed rows."""
    sql = ("WITH updated AS (UPDATE findings SET " + "".join(f"{column} = %s, " for column in changes)
           + f"updated_at = now() WHERE id = ANY(%s) RETURNING {FINDING_COLUMNS}),"
           " logged AS (INSERT INTO finding_history (finding_id, principal_id, status, assignee, note, changed)"
           " SELECT id, %s, status, assignee, note, %s FROM updated)"
           f" SELECT {FINDING_COLUMNS} FROM updated")
    return await fetch_all(state, sql, (*changes.values(), ids, principal.id, list(changes)))


@router.get("/findings", summary="List findings; filters combine with AND, repeated severity/status with OR",
            responses=responses(401, 403))
async def list_findings(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                        severity: list[Severity] = Query(default_factory=list),
                        status_: list[Status] = Query(default_factory=list, alias="status"),
                        rule_id: str | None = None, agent_id: str | None = None,
                        since: IsoTime | None = Query(None, description="event time >= (ISO 8601)"),
                        until: IsoTime | None = Query(None, description="event time < (ISO 8601)"),
                        q: str | None = Query(None, min_length=1, max_length=200,
                                              description="text in the title, rule title, description, rule id "
                                                          "or agent id (ignoring case; % and _ are plain "
                                                          "characters)"),
                        sort: Sort = Query("-time", description="time, rule title (ignoring case) or severity (by rank: "
                                                                "informational < low < medium < high < "
                                                                "critical); '-': descending"),
                        _: Principal = Depends(require("findings:read"))) -> dict:
    filters = [("severity = ANY(%s)", severity or None), ("status = ANY(%s)", status_ or None),
               ("rule_id = %s", rule_id), ("agent_id = %s", agent_id),
               (f"{FINDING_TIME} >= %s", since), (f"{FINDING_TIME} < %s", until),
               (TEXT_SEARCH, None if q is None else like_pattern(q))]
    return await fetch_page(state, FINDING_COLUMNS, "findings", filters, SORTS[sort], page)


@router.post("/findings/triage", summary="Triage several findings alike: status, assignee, note (null clears "
                                          "these two); ids that do not exist are listed in missing",
             responses=responses(400, 401, 403))
async def triage_findings(body: FindingTriage, state: ApiState = Depends(get_state),
                          principal: Principal = Depends(require("findings:write"))) -> dict:
    ids = list(dict.fromkeys(body.ids))  # each once, in the order given
    rows = {row["id"]: row for row in await triage(state, ids, body.changes(), principal)}
    return {"updated": len(rows), "items": [rows[i] for i in ids if i in rows],
            "missing": [i for i in ids if i not in rows]}


@router.get("/findings/{finding_id}", summary="One finding", responses=responses(401, 403, 404))
async def get_finding(finding_id: uuid.UUID, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("findings:read"))) -> dict:
    row = await fetch_one(state, f"SELECT {FINDING_COLUMNS} FROM findings WHERE id = %s", (finding_id,))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no finding {finding_id}")
    return row


@router.get("/findings/{finding_id}/history",
            summary=f"A finding's triage changes, oldest first (the first {MAX_HISTORY}): when, by whom, and its "
                    "status, assignee and note after each (changed: the fields the change set)",
            responses=responses(401, 403, 404))
async def finding_history(finding_id: uuid.UUID, state: ApiState = Depends(get_state),
                          _: Principal = Depends(require("findings:read"))) -> dict:
    rows = await fetch_all(
        state,
        "SELECT h.at, h.principal_id, h.status, h.assignee, h.note, h.changed FROM findings f"
        " LEFT JOIN LATERAL (SELECT * FROM finding_history WHERE finding_id = f.id ORDER BY at, id LIMIT %s) h"
        " ON TRUE WHERE f.id = %s ORDER BY h.at, h.id",
        (MAX_HISTORY, finding_id))
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no finding {finding_id}")
    return {"items": [row for row in rows if row["at"] is not None]}


@router.patch("/findings/{finding_id}", summary="Triage a finding: status, assignee, note (null clears these two)",
              responses=responses(400, 401, 403, 404))
async def update_finding(finding_id: uuid.UUID, body: FindingUpdate, state: ApiState = Depends(get_state),
                         principal: Principal = Depends(require("findings:write"))) -> dict:
    rows = await triage(state, [finding_id], body.model_dump(include=body.model_fields_set), principal)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no finding {finding_id}")
    return rows[0]
