"""Rules: list, get, create/update (validated by the engine's loader: 422 with file/line/rule
errors, each with its diagnostic code, docs/diagnostics.md), enable/disable, delete. Every change
asks the engine to reload (``opmas.engine.reload``). ``POST /rules/validate`` checks a rule the same
way without storing it and reports each of its ``tests:`` cases."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, status
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from pydantic import Field

from opmas.connectors.nats.subjects import RELOAD_SUBJECT
from opmas.core.errors import Code, code_in
from opmas.core.rule_tests import CheckFailed, CheckTimeout, check_rule, run_case, run_isolated
from opmas.core.ruleset import RuleSource, load_ruleset
from opmas.api.auth import Principal
from opmas.api.db import execute, fetch_all, fetch_one, fetch_page
from opmas.api.deps import Paging, get_state, paging, require
from opmas.api.errors import responses
from opmas.connectors.postgres.rule_store import stored_name
from opmas.api.state import ApiState
from opmas.api.validation import ApiModel

router = APIRouter(tags=["rules"])

RULE_COLUMNS = "id, title, kind, level, enabled, source, path, created_at, updated_at"


EXAMPLE_RULE = """title: Command run as root through sudo
id: 0f0c3a0e-6a54-4c36-9f5e-2f1b9a7c0d11
description: the OpenAPI's example of a rule
logsource: {product: linux, service: auth}
detection:
    sudo:
        process.name: sudo
        message|contains|all: ['USER=root', 'COMMAND=']
    condition: sudo
level: low
"""


class RuleIn(ApiModel):
    source: str = Field(min_length=1, max_length=1_000_000, description="the rule's Sigma YAML (one rule)",
                        examples=[EXAMPLE_RULE])


def _invalid(message: str, errors: list[dict[str, Any]] | None = None) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         detail={"message": message, "errors": errors or []})


async def rule_set_with(state: ApiState, source: str, name: str) -> list[RuleSource]:
    """The enabled stored rules (API and file rules; the API rule stored as ``name`` left out) and
    ``source`` as ``name``, last, so that a clash of ids is reported on it."""
    others = await fetch_all(state, "SELECT DISTINCT ON (COALESCE(path, id)) id, source, path FROM rules"
                                    " WHERE enabled ORDER BY COALESCE(path, id)")
    sources = [RuleSource(r["path"] or stored_name(r["id"]), r["source"])
               for r in others if stored_name(r["id"]) != name]
    sources.append(RuleSource(name, source))
    return sources


async def validate_rule(state: ApiState, source: str, name: str) -> dict[str, Any]:
    """Load ``source`` with the engine (beside the other rules, so correlations resolve) and run
    its ``tests:`` cases, in a child process with a deadline (core/rule_tests.py: the work stays
    off the event loop, and a check that overruns is stopped); returns the rule's metadata or
    raises 422 listing each error or failed case with file, line, rule id and code."""
    sources = await rule_set_with(state, source, name)
    try:
        result = await asyncio.to_thread(run_isolated, check_rule, sources, name)
    except CheckTimeout as exc:
        where = exc.where
        raise _invalid("checking the rule took too long", [
            {"file": where.get("file") or name, "line": where.get("line"), "rule_id": where.get("rule_id"),
             "code": str(exc.code), "message": str(exc)}]) from None
    except CheckFailed as exc:
        raise _invalid("checking the rule failed", [{"file": name, "line": None, "rule_id": None,
                                                     "code": str(exc.code), "message": str(exc)}]) from None
    if not result["ok"]:
        raise _invalid(result["message"], result["errors"])
    return result["rule"]


class RuleCheckIn(ApiModel):
    yaml: str = Field(min_length=1, max_length=1_000_000, description="one rule's Sigma YAML",
                      examples=[EXAMPLE_RULE])
    rule_id: str | None = Field(None, min_length=1, max_length=128,
                                description="editing a stored API rule: its id; that rule is left out of the "
                                            "rule set the YAML is checked beside (else its id would clash)")


def rule_report(sources: list[RuleSource], name: str,
                progress: Any = lambda where: None) -> dict[str, Any]:
    """What ``POST /rules/validate`` answers for the rule in ``name`` loaded among ``sources``: the
    loader's errors for it (as :func:`check_rule` reads them) or, when it loads, the outcome of each
    of its ``tests:`` cases through the rule-test runner (``run_case``). Runs in a checker process."""
    progress({"file": name, "line": None, "rule_id": None, "step": "loading the rule"})
    ruleset, problems = load_ruleset(sources)
    errors = [{"code": str(e.code), "message": e.message, "line": e.line, "column": None, "rule_id": e.rule_id}
              for e in problems if e.file == name and e.severity == "error"]
    rules = [r for r in ruleset.rules if r.source == name]
    if not errors and len(rules) != 1:
        errors = [{"code": str(Code.SCHEMA_VALUE), "message": f"the YAML must hold exactly one rule, found "
                   f"{len(rules)}", "line": None, "column": None, "rule_id": None}]
    if errors:
        rule_id = next((e["rule_id"] for e in errors if e["rule_id"]), None)
        return {"valid": False, "rule_id": rule_id, "title": None, "errors": errors, "tests": []}
    rule, tests = rules[0], []
    for expectation, failure in (("match", "expected a finding, got none"),
                                 ("no_match", "expected no finding, got one")):
        for index, case in enumerate(rule.tests.get(expectation) or [], start=1):
            case_name = f"tests.{expectation} case #{index}"
            progress({"file": name, "line": rule.line, "rule_id": rule.id, "step": case_name})
            passed = run_case(ruleset, rule.id, case) == (expectation == "match")
            tests.append({"name": case_name, "passed": passed, "message": "ok" if passed else failure})
    return {"valid": True, "rule_id": rule.id, "title": rule.title, "errors": [], "tests": tests}


async def request_reload(state: ApiState, reason: str) -> dict[str, Any]:
    """Ask the running engine to reload its rules; its answer, or why there is none."""
    try:
        reply = await state.nc.request(RELOAD_SUBJECT, orjson.dumps({"reason": reason}),
                                       timeout=state.settings.reload_timeout)
    except NoRespondersError:
        return {"status": "no engine listening"}
    except NatsTimeout:
        return {"status": "timeout", "after_seconds": state.settings.reload_timeout}
    try:
        return orjson.loads(reply.data)
    except orjson.JSONDecodeError:
        return {"status": "reply", "text": reply.data.decode(errors="replace")}


async def reload_or_undo(state: ApiState, reason: str, rule_id: str, before: dict[str, Any] | None) -> dict[str, Any]:
    """Reload the engine; if it refuses the new rule set (it keeps running the old one), put the
    rule back as it was (``before``; None: it did not exist) and answer 422 with the engine's errors,
    so the stored rules never hold a set the engine will not load. The engine lists its errors as text
    (``str(RuleError)``): each one's code is read from its end (None where the text has none)."""
    reload = await request_reload(state, reason)
    if reload.get("ok") is not False:
        return reload
    if before is None:
        await execute(state, "DELETE FROM rules WHERE id = %s", (rule_id,))
    else:
        await execute(
            state,
            "INSERT INTO rules (id, title, kind, level, enabled, source, path) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, kind = EXCLUDED.kind, level = EXCLUDED.level,"
            " enabled = EXCLUDED.enabled, source = EXCLUDED.source, path = EXCLUDED.path, updated_at = now()",
            tuple(before[c] for c in ("id", "title", "kind", "level", "enabled", "source", "path")))
    raise _invalid("the engine refused the resulting rule set (it keeps running the previous one); "
                   "the change was undone",
                   [{"code": code_in(str(e)), "message": str(e)} for e in reload.get("errors", [])])


async def _get(state: ApiState, rule_id: str) -> dict[str, Any]:
    row = await fetch_one(state, f"SELECT {RULE_COLUMNS} FROM rules WHERE id = %s", (rule_id,))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id}")
    return row


async def _get_changeable(state: ApiState, rule_id: str) -> dict[str, Any]:
    row = await _get(state, rule_id)
    if row["path"] is not None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"rule {rule_id} comes from the file {row['path']}: change the file "
                                   "(the engine reloads it), or add a rule with another id")
    return row


@router.get("/rules", summary="List rules: the API's and (``path`` set, read-only) those of the rule files",
            responses=responses(401, 403))
async def list_rules(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                     enabled: bool | None = None, level: str | None = None,
                     kind: str | None = Query(None, pattern="^(detection|correlation)$"),
                     origin: str | None = Query(None, pattern="^(api|file)$"),
                     _: Principal = Depends(require("rules:read"))) -> dict:
    filters = [("enabled = %s", enabled), ("level = %s", level), ("kind = %s", kind),
               ("(path IS NULL) = %s", None if origin is None else origin == "api")]
    return await fetch_page(state, RULE_COLUMNS, "rules", filters, "id", page)


@router.post("/rules/validate", summary="Check one rule's YAML as POST /rules would, without storing it: the "
                                        "loader's errors (code, message, line), else the outcome of each of "
                                        "its tests: cases",
             description="Answered 200 whether or not the rule is valid: `valid` is whether it loads (beside the "
                         "stored rules, so correlations resolve); `tests` lists each `tests:` case, passed or "
                         "not, when it does. The check runs in a child process with a deadline "
                         "(OPMAS_RULE_CHECK_TIMEOUT).",
             responses=responses(400, 401, 403))
async def check_rule_yaml(body: RuleCheckIn, state: ApiState = Depends(get_state),
                          _: Principal = Depends(require("rules:read"))) -> dict:
    name = "api:new rule" if body.rule_id is None else stored_name(body.rule_id)
    sources = await rule_set_with(state, body.yaml, name)
    try:
        report = await asyncio.to_thread(run_isolated, rule_report, sources, name)
    except (CheckTimeout, CheckFailed) as exc:
        where = getattr(exc, "where", {})
        report = {"valid": False, "rule_id": where.get("rule_id"), "title": None, "tests": [], "errors": [
            {"code": str(exc.code), "message": str(exc), "line": where.get("line"), "column": None}]}
    for error in report["errors"]:
        error.pop("rule_id", None)
    return report


@router.get("/rules/{rule_id}", summary="One rule with its YAML", responses=responses(401, 403, 404))
async def get_rule(rule_id: str, state: ApiState = Depends(get_state),
                   _: Principal = Depends(require("rules:read"))) -> dict:
    return await _get(state, rule_id)


@router.post("/rules", status_code=status.HTTP_201_CREATED, summary="Add a rule (validated), then reload",
             description="The rule's id must be a UUID (as the Sigma specification asks) or a slug of letters, "
                         "digits, '.', '_' and '-' starting with a letter or digit, at most 128 characters: "
                         "the id is how the other routes address it.",
             responses=responses(400, 401, 403, 409))
async def create_rule(body: RuleIn, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("rules:write"))) -> dict:
    meta = await validate_rule(state, body.source, "api:new rule")  # its id is unknown until parsed
    row = await fetch_one(
        state,
        "INSERT INTO rules (id, title, kind, level, source, path) VALUES (%s, %s, %s, %s, %s, NULL)"
        f" ON CONFLICT (id) DO NOTHING RETURNING {RULE_COLUMNS}",
        (meta["id"], meta["title"], meta["kind"], meta["level"], body.source),
    )
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"rule {meta['id']} exists; PUT /rules/{meta['id']}")
    return {**row, "reload": await reload_or_undo(state, f"rule {meta['id']} created", meta["id"], None)}


@router.put("/rules/{rule_id}", summary="Replace a rule's YAML (validated; its id must stay), then reload",
            responses=responses(400, 401, 403, 404, 409))
async def update_rule(rule_id: str, body: RuleIn, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("rules:write"))) -> dict:
    before = await _get_changeable(state, rule_id)
    meta = await validate_rule(state, body.source, stored_name(rule_id))
    if meta["id"] != rule_id:
        raise _invalid(f"the YAML's id {meta['id']} differs from {rule_id}")
    row = await fetch_one(
        state,
        "UPDATE rules SET title = %s, kind = %s, level = %s, source = %s, updated_at = now()"
        f" WHERE id = %s RETURNING {RULE_COLUMNS}",
        (meta["title"], meta["kind"], meta["level"], body.source, rule_id),
    )
    if row is None:  # deleted while it was being validated
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id}")
    return {**row, "reload": await reload_or_undo(state, f"rule {rule_id} updated", rule_id, before)}


async def _set_enabled(state: ApiState, rule_id: str, enabled: bool) -> dict:
    before = await _get_changeable(state, rule_id)
    row = await fetch_one(state, "UPDATE rules SET enabled = %s, updated_at = now()"
                                 f" WHERE id = %s RETURNING {RULE_COLUMNS}", (enabled, rule_id))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id}")
    verb = "enabled" if enabled else "disabled"
    return {**row, "reload": await reload_or_undo(state, f"rule {rule_id} {verb}", rule_id, before)}


@router.post("/rules/{rule_id}/enable", summary="Enable a rule, then reload", responses=responses(401, 403, 404, 409))
async def enable_rule(rule_id: str, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("rules:write"))) -> dict:
    return await _set_enabled(state, rule_id, True)


@router.post("/rules/{rule_id}/disable", summary="Disable a rule, then reload", responses=responses(401, 403, 404, 409))
async def disable_rule(rule_id: str, state: ApiState = Depends(get_state),
                       _: Principal = Depends(require("rules:write"))) -> dict:
    return await _set_enabled(state, rule_id, False)


@router.delete("/rules/{rule_id}", summary="Delete a rule, then reload", responses=responses(401, 403, 404, 409))
async def delete_rule(rule_id: str, state: ApiState = Depends(get_state),
                      _: Principal = Depends(require("rules:write"))) -> dict:
    before = await _get_changeable(state, rule_id)
    await execute(state, "DELETE FROM rules WHERE id = %s", (rule_id,))
    return {"id": rule_id, "deleted": True,
            "reload": await reload_or_undo(state, f"rule {rule_id} deleted", rule_id, before)}
