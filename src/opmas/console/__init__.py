"""The analyst's web console: static files (no build step; vendored ES modules in ``vendor/``),
served by the management API at ``/`` (``opmas up``). See docs/console.md."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.convertors import CONVERTOR_TYPES, Convertor, register_url_convertor
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

CONSOLE_DIR = Path(__file__).parent

# Scripts and styles only from the console's own origin (no inline script, no eval), data only from
# the same origin (REST and WebSocket), no framing, no plugins.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'; object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated (ETag), so an upgrade is seen at once
}
FIELD_ALIASES = "/field-aliases.json"  # for highlighting the fields a rule tests in an event


@lru_cache(maxsize=1)
def field_aliases() -> bytes:
    """The shipped logsource mappings' field names, for the console: ``{"fields": {sigma field: [event
    paths]}, "keywords": [event paths Sigma keywords search]}`` (shipped configuration, no data)."""
    from opmas.core.logsource import builtin_mappings

    fields: dict[str, set[str]] = {}
    keywords: set[str] = set()
    for mapping in builtin_mappings():
        for entry in mapping.entries:
            for sigma_name, path in entry.fields:
                fields.setdefault(sigma_name, set()).add(path)
        keywords.update(mapping.keywords or ())
    return json.dumps({"fields": {name: sorted(paths) for name, paths in sorted(fields.items())},
                       "keywords": sorted(keywords)}).encode()


class ConsolePath(Convertor):
    """A URL path of the console: any path but the API's (``/api``, ``/metrics`` and below)."""

    regex = r"(?!api(?:/|$)|metrics(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def register_console_paths() -> None:
    """Make ``{path:console}`` known to Starlette's routing (once per process)."""
    if "console" not in CONVERTOR_TYPES:
        register_url_convertor("console", ConsolePath())


class ConsoleFiles(StaticFiles):
    """The console's files with its security headers: the API's last route, for GET and HEAD of any path
    (api/app.py), so the API's routes win."""

    def __init__(self, directory: Path = CONSOLE_DIR) -> None:
        super().__init__(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("path") == FIELD_ALIASES:
            response = Response(field_aliases(), media_type="application/json", headers=SECURITY_HEADERS)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path.endswith(".py") or "__pycache__" in path.split("/"):
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response
