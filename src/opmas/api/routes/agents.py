"""Agents: register (with credentials), list, get, update (config pushed on opmas.control.<id>), delete."""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, status
from nats.errors import Error as NatsError
from psycopg.types.json import Jsonb
from pydantic import Field, field_validator

from opmas.agents.config import SCHEMA_PATH as AGENT_CONFIG_SCHEMA_PATH, config_errors
from opmas.connectors.nats.subjects import REVOKED_SUBJECT, control_subject
from opmas.core.event import format_time
from opmas.api.auth import AGENT_PERMISSIONS, Principal
from opmas.credentials import hash_secret, new_secret
from opmas.api.db import execute, fetch_one, fetch_page
from opmas.api.deps import Paging, current_principal, get_state, paging, require
from opmas.api.errors import responses
from opmas.api.nats_auth import SERVICE_USER
from opmas.api.state import ApiState
from opmas.api.validation import ApiModel

router = APIRouter(tags=["agents"])
log = logging.getLogger("management")

AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
AGENT_COLUMNS = ("id, name, type, status, config, config_version, applied_config_version, last_seen,"
                 " info, created_at, updated_at")
STATUSES = ("online", "stale", "offline")
API_AGENT_ID = "api"  # the agent id of events users submit through the API
RESERVED_AGENT_IDS = {SERVICE_USER: "the NATS user of the OPMAS services",
                      API_AGENT_ID: "the agent id of events users submit"}


def _config_schema() -> dict[str, Any]:
    """The agent configuration's JSON Schema, as the OpenAPI shows ``config`` (what ``_config`` checks)."""
    schema = orjson.loads(AGENT_CONFIG_SCHEMA_PATH.read_bytes())
    return {key: value for key, value in schema.items() if key not in ("$schema", "$id", "title")}


def _config(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and (errors := config_errors(value)):
        raise ValueError("invalid agent config: " + "; ".join(errors))
    return value


class AgentIn(ApiModel):
    id: str | None = Field(None, pattern=AGENT_ID_PATTERN,
                           json_schema_extra={"not": {"enum": sorted(RESERVED_AGENT_IDS)}},
                           description="letters, digits, _ and - (it becomes a NATS subject token and user "
                                       f"name); not {' or '.join(sorted(RESERVED_AGENT_IDS))}")
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    config: dict[str, Any] = Field(default_factory=dict, json_schema_extra=_config_schema())

    _check_config = field_validator("config")(classmethod(lambda cls, v: _config(v)))

    @field_validator("id")
    @classmethod
    def not_reserved(cls, value: str | None) -> str | None:
        if value in RESERVED_AGENT_IDS:
            raise ValueError(f"agent id {value!r} is reserved: {RESERVED_AGENT_IDS[value]}")
        return value


class AgentUpdate(ApiModel):
    """The fields given change; absent ones stay (none of them can be null)."""

    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]  # absent: unchanged
    type: str = Field(None, min_length=1, max_length=100)  # type: ignore[assignment]
    config: dict[str, Any] = Field(None, json_schema_extra=_config_schema())  # type: ignore[assignment]

    _check_config = field_validator("config")(classmethod(lambda cls, v: _config(v)))


async def push_config(state: ApiState, agent: dict[str, Any]) -> bool:
    """Send an agent its configuration on its control subject; False if NATS is away (the agent
    reads the stored configuration when it next starts)."""
    message = {"type": "config", "version": agent["config_version"], "config": agent["config"]}
    try:
        await state.nc.publish(control_subject(agent["id"]), orjson.dumps(message))
        await state.nc.flush(timeout=5)
    except (NatsError, asyncio.TimeoutError) as exc:
        log.warning("config not pushed", extra={"agent_id": agent["id"], "error": repr(exc)})
        return False
    return True


async def get_agent_row(state: ApiState, agent_id: str) -> dict[str, Any]:
    row = await fetch_one(state, f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = %s", (agent_id,))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no agent {agent_id}")
    return row


@router.post("/agents", status_code=status.HTTP_201_CREATED,
             summary="Register an agent; its secret (API and NATS password) is shown only here",
             responses=responses(400, 401, 403, 409))
async def create_agent(body: AgentIn, state: ApiState = Depends(get_state),
                       _: Principal = Depends(require("agents:register"))) -> dict:
    agent_id, secret = body.id or uuid.uuid4().hex, new_secret()
    principal_id, secret_hash = f"agent:{agent_id}", await asyncio.to_thread(hash_secret, secret)
    async with state.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO agents (id, name, type, config) VALUES (%s, %s, %s, %s)"
            f" ON CONFLICT (id) DO NOTHING RETURNING {AGENT_COLUMNS}",
            (agent_id, body.name, body.type, Jsonb(body.config)),
        )
        agent = await cur.fetchone()
        if agent is None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"agent {agent_id} already exists")
        await conn.execute(
            "INSERT INTO principals (id, name, kind, agent_id, permissions, secret_hash)"
            " VALUES (%s, %s, 'agent', %s, %s, %s)",
            (principal_id, body.name, agent_id, list(AGENT_PERMISSIONS), secret_hash),
        )
    return {**agent, "credentials": {"principal_id": principal_id, "secret": secret,
                                     "nats_user": agent_id, "nats_password": secret}}


@router.get("/agents", summary="List agents with their liveness", responses=responses(401, 403))
async def list_agents(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                      status_: str | None = Query(None, alias="status", pattern="^(online|stale|offline)$"),
                      type_: str | None = Query(None, alias="type"),
                      _: Principal = Depends(require("agents:read"))) -> dict:
    filters = [("status = %s", status_), ("type = %s", type_)]
    return await fetch_page(state, AGENT_COLUMNS, "agents", filters, "created_at, id", page)


@router.get("/agents/{agent_id}", summary="One agent (an agent may read its own record)",
            responses=responses(401, 403, 404))
async def get_agent(agent_id: str, state: ApiState = Depends(get_state),
                    principal: Principal = Depends(current_principal)) -> dict:
    if not (principal.can("agents:read") or principal.agent_id == agent_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing permission agents:read")
    return await get_agent_row(state, agent_id)


@router.put("/agents/{agent_id}", summary="Update an agent; a new config is pushed to it at once",
            responses=responses(400, 401, 403, 404))
async def update_agent(agent_id: str, body: AgentUpdate, state: ApiState = Depends(get_state),
                       _: Principal = Depends(require("agents:admin"))) -> dict:
    current = await get_agent_row(state, agent_id)
    config_changed = body.config is not None and body.config != current["config"]
    row = await fetch_one(
        state,
        "UPDATE agents SET name = COALESCE(%s, name), type = COALESCE(%s, type),"
        " config = COALESCE(%s::jsonb, config),"
        " config_version = config_version + %s, updated_at = now()"
        f" WHERE id = %s RETURNING {AGENT_COLUMNS}",
        (body.name, body.type, Jsonb(body.config) if config_changed else None,
         1 if config_changed else 0, agent_id),
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no agent {agent_id}")
    return {**row, "config_pushed": await push_config(state, row) if config_changed else None}


@router.delete("/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an agent; its credentials and tokens stop working, its NATS connections are cut",
               responses=responses(401, 403, 404))
async def delete_agent(agent_id: str, state: ApiState = Depends(get_state),
                       _: Principal = Depends(require("agents:admin"))) -> None:
    if not await execute(state, "DELETE FROM agents WHERE id = %s", (agent_id,)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no agent {agent_id}")
    await state.nc.publish(REVOKED_SUBJECT, agent_id.encode())  # the auth callout cuts its NATS connections


def agent_state_message(row: dict[str, Any]) -> dict[str, Any]:
    """What /ws/agents streams about an agent (JSON-ready)."""
    return {"agent_id": row["id"], "status": row["status"],
            "last_seen": format_time(row["last_seen"].timestamp()) if row["last_seen"] else None,
            "config_version": row["config_version"],
            "applied_config_version": row["applied_config_version"]}
