"""Error answers: their bodies as documented in the OpenAPI, and the handlers that make them so.

Every error is JSON ``{"detail": ...}``: a message (``Problem``), or for 422 the list of what
failed validation (``ValidationProblem``, FastAPI's ``HTTPValidationError`` with inputs cut to
excerpts), a message, or a rule's errors with file, line, rule id and code (``RuleProblem``).
``responses(...)`` documents the codes a route answers beyond those every route may answer
(``COMMON``: 413, 422, 503).
"""
from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from pydantic import BaseModel, Field

from opmas.api.validation import MESSAGE_CHARS, excerpt, validation_errors
from opmas.core.errors import Code

log = logging.getLogger("management")


class Problem(BaseModel):
    """An error with a message."""

    detail: str


class ValidationItem(BaseModel):
    """One thing that failed validation; ``input`` and ``ctx`` quote the input only as an excerpt."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class RuleError(BaseModel):
    file: str | None = None
    line: int | None = None
    rule_id: str | None = None
    code: Code | None = Field(None, description="the stable code of the problem (docs/diagnostics.md); match on "
                                                "it rather than on the message")
    message: str


class RuleProblems(BaseModel):
    message: str
    errors: list[RuleError]


class ValidationProblem(BaseModel):
    """422: the request is well-formed but cannot be taken as it is."""

    detail: list[ValidationItem] | RuleProblems | str = Field(
        description="what failed validation (as FastAPI's HTTPValidationError), a rule's errors with "
                    "file, line and rule id, or a message")


def _problem(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": Problem, "description": description}
    if headers:
        doc["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return doc


ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: _problem("The body could not be read (not UTF-8, too deeply nested)"),
    401: _problem("Missing, invalid, expired or revoked token; or, for the token exchange, wrong credentials",
                  {"WWW-Authenticate": "Bearer"}),
    403: _problem("The principal lacks the permission this needs"),
    404: _problem("No such resource"),
    409: _problem("Conflicts with what exists"),
    410: _problem("No longer kept"),
    413: _problem("The request body (or an event's envelope) is over the size limit"),
    422: {"model": ValidationProblem, "description": "Validation error"},
    429: _problem("Too many failed attempts from this address or for this principal, or too many hunts "
                  "running: retry later",
                  {"Retry-After": "seconds to wait"}),
    503: _problem("A server the API needs (PostgreSQL, NATS) is unavailable: retry later",
                  {"Retry-After": "seconds to wait"}),
}
COMMON = (413, 422, 503)  # any route: a body over the limit, a NUL in a parameter, PostgreSQL away


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes (besides ``COMMON``)."""
    return {code: ERROR_RESPONSES[code] for code in codes}


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing what failed, each input quoted only as an excerpt (never the whole body)."""
    return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)


async def database_refused_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
    """422 for a value PostgreSQL refuses (out of range, not representable) that validation let
    through: the request is at fault, not the server."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    log.warning("database refused a value", extra={"path": request.url.path, "error": excerpt(message, MESSAGE_CHARS)})
    return JSONResponse({"detail": f"a value was refused by the database: {excerpt(message, MESSAGE_CHARS)}"},
                        status_code=422)


async def database_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
    log.error("database unavailable", extra={"path": request.url.path, "error": str(exc)})
    return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                        headers={"Retry-After": "5"})


def _path_methods(request: Request) -> list[tuple[re.Pattern, int, list[str]]]:
    """(path template as a regex, its number of parameters, its methods) for every path of the app's
    OpenAPI, made once."""
    table = getattr(request.app.state, "opmas_path_methods", None)
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{[^}]*\})", template))
            table.append((re.compile(f"^{pattern}$"), template.count("{"),
                          sorted(method.upper() for method in operations)))
        request.app.state.opmas_path_methods = table
    return table


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer to an HTTPException, except that a 405's ``Allow`` lists every method the
    path has (the router names only those of the first route that matched the path). As OpenAPI
    matches paths, a concrete path wins over a templated one (``/rules/validate`` over
    ``/rules/{rule_id}``): the methods are those of the matching paths with the fewest parameters."""
    if exc.status_code == 405:
        path = request.scope.get("path", "")
        matching = [(params, methods) for pattern, params, methods in _path_methods(request) if pattern.match(path)]
        fewest = min((params for params, _ in matching), default=0)
        methods = sorted({method for params, methods in matching if params == fewest for method in methods})
        if methods:
            exc = StarletteHTTPException(405, detail=exc.detail, headers={"Allow": ", ".join(methods)})
    return await http_exception_handler(request, exc)
