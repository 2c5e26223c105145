"""Findings: list with filters, get, and triage (status open/acknowledged/resolved, assignee, note)."""
from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import ConfigDict, Field, model_validator

from opmas.core.finding import SEVERITIES
from opmas.api.auth import Principal
from opmas.api.db import fetch_one, fetch_page
from opmas.api.deps import Paging, get_state, paging, require
from opmas.api.errors import responses
from opmas.api.state import ApiState
from opmas.api.validation import ApiModel, IsoTime

router = APIRouter(tags=["findings"])

FINDING_COLUMNS = ("id, rule_id, rule_title, severity, title, description, tags, event_ids, agent_id,"
                   " group_key, details, status, assignee, note, event_time, created_at, updated_at")
Status = Literal["open", "acknowledged", "resolved"]
Severity = Literal[SEVERITIES]


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


@router.get("/findings", summary="List findings; filters combine with AND, repeated severity/status with OR",
            responses=responses(401, 403))
async def list_findings(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                        severity: list[Severity] = Query(default_factory=list),
                        status_: list[Status] = Query(default_factory=list, alias="status"),
                        rule_id: str | None = None, agent_id: str | None = None,
                        since: IsoTime | None = Query(None, description="event time >= (ISO 8601)"),
                        until: IsoTime | None = Query(None, description="event time < (ISO 8601)"),
                        _: Principal = Depends(require("findings:read"))) -> dict:
    filters = [("severity = ANY(%s)", severity or None), ("status = ANY(%s)", status_ or None),
               ("rule_id = %s", rule_id), ("agent_id = %s", agent_id),
               ("COALESCE(event_time, created_at) >= %s", since),
               ("COALESCE(event_time, created_at) < %s", until)]
    return await fetch_page(state, FINDING_COLUMNS, "findings", filters,
                            "COALESCE(event_time, created_at) DESC, id", page)


@router.get("/findings/{finding_id}", summary="One finding", responses=responses(401, 403, 404))
async def get_finding(finding_id: uuid.UUID, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("findings:read"))) -> dict:
    row = await fetch_one(state, f"SELECT {FINDING_COLUMNS} FROM findings WHERE id = %s", (finding_id,))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no finding {finding_id}")
    return row


@router.patch("/findings/{finding_id}", summary="Triage a finding: status, assignee, note (null clears these two)",
              responses=responses(400, 401, 403, 404))
async def update_finding(finding_id: uuid.UUID, body: FindingUpdate, state: ApiState = Depends(get_state),
                         _: Principal = Depends(require("findings:write"))) -> dict:
    changes = body.model_dump(include=body.model_fields_set)  # column names: the model's fields
    row = await fetch_one(
        state,
        "UPDATE findings SET " + "".join(f"{column} = %s, " for column in changes)
        + f"updated_at = now() WHERE id = %s RETURNING {FINDING_COLUMNS}",
        (*changes.values(), finding_id),
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no finding {finding_id}")
    return row
