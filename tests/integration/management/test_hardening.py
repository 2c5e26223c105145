"""The API's edges (issue 11): secrets kept out of logs, request bodies capped before they are read,
rule ids the API can address, the inputs a fuzzer found to give 500, and failed token exchanges
limited per principal and per client address."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import jwt
import nats
import pytest
from websockets.sync.client import connect

from opmas.connectors.nats.subjects import ensure_streams
from opmas.api.limits import FailureLimiter, TokenGuard
from opmas.api.routes.events import EventIn
from opmas.api.settings import ApiSettings
from opmas.config import Config, PipelineConfig, load_config
from opmas.cli.up import _print_where
from opmas.logs import JsonFormatter, redact
from tests.integration.management.test_resources import RULE

MIB = 1 << 20


# --- 7. secrets in logs ------------------------------------------------------------------------------

def test_redact_hides_tokens_secrets_and_passwords():
    token = jwt.encode({"sub": "admin", "jti": "x"}, "k" * 40, algorithm="HS256")
    cases = {
        f'127.0.0.1:5 - "WebSocket /api/v1/ws/findings?token={token}" [accepted]':
            '127.0.0.1:5 - "WebSocket /api/v1/ws/findings?token=<redacted>" [accepted]',
        "/ws/events?agent_id=a&token=abc.def&x=1": "/ws/events?agent_id=a&token=<redacted>&x=1",
        f"sent {token} again": "sent <redacted> again",
        "Authorization: Bearer abcdefghijk.lmn": "Authorization: Bearer <redacted>",
        "nats://opmas:pw123@nats:4222": "nats://opmas:<redacted>@nats:4222",
        '{"message":"x","secret":"s3cr3t","nats_password":"pw","ok":1}':
            '{"message":"x","secret":"<redacted>","nats_password":"<redacted>","ok":1}',
        '{"message":"body {\\"secret\\": \\"hunter2\\", \\"a\\": 1}"}':
            '{"message":"body {\\"secret\\": \\"<redacted>\\", \\"a\\": 1}"}',
        "{'password': 'x1', 'user': 'u'}": "{'password': '<redacted>', 'user': 'u'}",
    }
    for line, expected in cases.items():
        assert redact(line) == expected
    for harmless in ("missing bearer token (Authorization: Bearer <JWT>)", '{"token_ttl":3,"finding_id":"f-1"}',
                     "postgresql://postgres:@/postgres?host=/data/postgres"):
        assert redact(harmless) == harmless


def test_a_websocket_token_in_the_query_never_reaches_a_log_line(stack):
    """uvicorn logs each WebSocket's path with its query string at info level."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    uvicorn_log = logging.getLogger("uvicorn.error")
    level = uvicorn_log.level
    uvicorn_log.addHandler(handler)
    uvicorn_log.setLevel(logging.INFO)
    token = stack.token()
    try:
        with connect(f"{stack.ws_url}/ws/findings?token={token}") as ws:
            ws.recv(timeout=10)
    finally:
        uvicorn_log.removeHandler(handler)
        uvicorn_log.setLevel(level)
    logged = out.getvalue()
    assert "/api/v1/ws/findings?token=<redacted>" in logged
    assert token not in logged and token.split(".")[2] not in logged


# --- 8. request size -------------------------------------------------------------------------------

def _raw_request(stack, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[float, bytes]:
    """Send ``head`` (and ``body``), return (seconds until the first bytes of the answer, the answer)."""
    with socket.create_connection((stack.settings.host, stack.settings.port), timeout=timeout) as sock:
        started = time.perf_counter()
        sock.sendall(head.encode() + body)
        first = sock.recv(65536)
        took = time.perf_counter() - started
        answer = first
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return took, answer


def test_a_body_declared_too_large_is_refused_before_it_is_sent(stack):
    """The 300 MB POST of the issue, without its 300 MB: the answer comes from the headers alone."""
    head = (f"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {300 * 1000 * 1000}\r\n\r\n")
    took, answer = _raw_request(stack, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"detail":"request body over 2097152 bytes (OPMAS_API_MAX_BODY_BYTES)"' in answer
    assert took < 2


def test_a_chunked_body_is_cut_off_at_the_limit(stack):
    sent = 0

    def chunks():
        nonlocal sent
        yield b'{"principal_id": "admin", "secret": "'
        for _ in range(64):  # 16 MiB, never all sent
            sent += 256 * 1024
            yield b"a" * (256 * 1024)

    try:
        r = httpx.post(f"{stack.url}/api/v1/auth/token", content=chunks(),
                       headers={"content-type": "application/json"}, timeout=10)
    except httpx.TransportError:  # the server closed while the client was still sending: also refused
        assert sent < 16 * MIB
        return
    assert r.status_code == 413 and "request body over" in r.json()["detail"]


def test_a_large_body_under_the_limit_is_not_echoed(stack):
    """Under the limit a bad body is a 422 that quotes an excerpt of the input, not the input."""
    big = "x" * (MIB + 123)
    r = httpx.post(f"{stack.url}/api/v1/auth/token", json={"principal_id": "admin", "secret": big})
    assert r.status_code == 422 and len(r.content) < 2000
    error = r.json()["detail"][0]
    assert error["loc"] == ["body", "secret"] and error["input"].endswith(f"... ({len(big)} characters)")
    r = httpx.post(f"{stack.url}/api/v1/auth/token", json=["a" * 500_000] * 2)
    assert r.status_code == 422 and len(r.content) < 2000


def test_a_rule_at_the_size_the_api_takes_fits_under_the_body_limit(admin):
    """RuleIn takes up to 1,000,000 characters of YAML; as JSON (newlines and quotes escaped) that
    must stay under the 2 MiB body limit."""
    rule_id = str(uuid.uuid4())
    head = RULE.replace("5a6b7c8d-0000-4000-8000-000000000001", rule_id).replace(
        "title: API Test Rule", "title: API Test Rule\ndescription: |")
    line = '    "quoted" text, repeated to make a large rule\n'
    source = head.replace("description: |", "description: |\n" + line * ((990_000 - len(head)) // len(line)), 1)
    assert 900_000 < len(source) <= 1_000_000
    r = admin.post("/rules", json={"source": source})
    assert r.status_code == 201, r.text[:300]
    assert admin.delete(f"/rules/{rule_id}").status_code == 200


def test_the_body_limit_is_configurable():
    settings = ApiSettings.from_config(load_config(env={"OPMAS_API_MAX_BODY_BYTES": "1048576"}), "postgresql://x", "nats://x")
    assert settings.max_body_bytes == MIB
    assert ApiSettings(db_url="x", nats_url="y").max_body_bytes == 2 * MIB


# --- 10. rule ids ----------------------------------------------------------------------------------

def test_a_rule_id_the_api_cannot_address_is_refused(admin):
    for bad in ("../../../../tmp/x", "a/b", "has space", ".hidden", "x" * 129):
        r = admin.post("/rules", json={"source": RULE.replace("5a6b7c8d-0000-4000-8000-000000000001", bad)})
        assert r.status_code == 422, (bad, r.text)
        [error] = r.json()["detail"]["errors"]
        assert "cannot be addressed" in error["message"] and error["line"] == 2, error
    assert not [rule for rule in admin.get("/rules", params={"limit": 1000}).json()["items"] if "/" in rule["id"]]


def test_a_slug_rule_id_is_addressable(admin):
    slug = "ssh-brute_force.v2"
    r = admin.post("/rules", json={"source": RULE.replace("5a6b7c8d-0000-4000-8000-000000000001", slug)})
    assert r.status_code == 201, r.text
    assert admin.get(f"/rules/{slug}").json()["id"] == slug
    assert admin.post(f"/rules/{slug}/disable").json()["enabled"] is False
    assert admin.delete(f"/rules/{slug}").status_code == 200


# --- 11. what the fuzzer found --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/findings", "/rules", "/principals", "/agents", "/events"])
def test_an_offset_beyond_any_table_is_422(admin, path):
    r = admin.get(path, params={"offset": "99999999999999999999"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "offset"]
    assert admin.get(path, params={"offset": 1_000_000_000}).status_code == 200


def test_nul_in_a_parameter_is_422(admin):
    for method, path, params in (("GET", "/findings", {"rule_id": "\x00"}), ("GET", "/findings", {"agent_id": "a\x00"}),
                                 ("GET", "/events/%00", None), ("GET", "/rules/%00", None),
                                 ("POST", "/rules/%00/disable", None), ("GET", "/agents/x%00y", None),
                                 ("GET", "/events", {"type": "\x00"})):
        r = admin.request(method, path, params=params)
        assert r.status_code == 422, (method, path, r.text)
        assert r.json()["detail"][0]["msg"] == "NUL characters are not allowed"


def test_nul_or_a_non_finite_number_in_a_body_is_422(admin):
    for path, body in (("/agents", {"name": "a\x00", "type": "tail"}),
                       ("/agents", {"name": "a", "type": "tail", "config": {"x\x00": 1}}),
                       ("/agents", {"name": "a", "type": "tail", "config": {"labels": [float("inf")]}}),
                       ("/principals", {"name": "\x00", "permissions": []}),
                       ("/events", {"id": "e\x00", "data": {}})):
        r = admin.post(path, content=json.dumps(body).replace("Infinity", "1e400"),
                       headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["detail"][0]["msg"].split(" (at ")[0] in (
            "Value error, NUL characters are not allowed", "Value error, NUL characters are not allowed in keys",
            "Value error, numbers must be finite (no NaN or infinity)")


def test_nan_ttl_and_an_infinite_timestamp_are_422(stack, admin):
    r = httpx.post(f"{stack.url}/api/v1/auth/token", content=b'{"principal_id": "admin", "secret": "x", "ttl": NaN}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ttl"]
    r = admin.post("/events", content=b'{"timestamp": 1e400, "data": {}}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["input"] == "inf"
    r = admin.get("/findings", params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"})
    assert r.status_code == 200


def test_event_timestamps_are_what_the_openapi_says(admin):
    """A string is RFC 3339 (the OpenAPI's date-time; 't' and 'z' too), epoch seconds go as a number."""
    for text in ("0", "1700000000", "2024-01-01", "0000-01-01T00:00:00Z", "yesterday-ish"):
        r = admin.post("/events", json={"timestamp": text, "data": {}})
        assert r.status_code == 422 and "cannot read" in r.json()["detail"][0]["msg"], (text, r.text)
    assert EventIn.model_validate({"timestamp": "2024-01-01t00:00:00z", "data": {}}).timestamp == "2024-01-01T00:00:00Z"
    assert EventIn.model_validate({"timestamp": 1700000000, "data": {}}).timestamp == 1700000000


async def test_nul_in_event_data_is_taken(stack, admin):
    """An event's data may hold NUL (raw logs do); the pipeline stores it without them."""
    nc = await nats.connect(stack.nats_url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    r = await asyncio.to_thread(admin.post, "/events", json={"data": {"message": "a\x00b"}})
    assert r.status_code == 202, r.text


# --- 12. token exchange rate limit ----------------------------------------------------------------

def test_failure_limiter_refills_and_forgets():
    now = [0.0]
    limiter = FailureLimiter(per_minute=3, max_keys=2, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a") == 0
        limiter.take("a")
    assert limiter.retry_after("a") == pytest.approx(20)
    now[0] += 20
    assert limiter.retry_after("a") == 0
    limiter.take("a")
    limiter.give_back("a")
    assert limiter.retry_after("a") == 0
    limiter.take("b"), limiter.take("c")
    assert "a" not in limiter._buckets and len(limiter._buckets) == 2
    assert FailureLimiter(per_minute=0).retry_after("x") == 0


def test_token_guard_counts_principal_and_address():
    guard = TokenGuard(per_principal=2, per_address=3)
    assert guard.acquire("p", "10.0.0.1") is None and guard.acquire("p", "10.0.0.2") is None
    assert guard.acquire("p", "10.0.0.3") == 30  # the principal's budget is spent, whatever the address
    assert guard.acquire("q", "10.0.0.1") is None
    guard.release("q", "10.0.0.1")  # a success gives back what it took
    assert guard.acquire("r", "10.0.0.1") is None and guard.acquire("s", "10.0.0.1") is None
    assert guard.acquire("t", "10.0.0.1") == 20  # the address's budget is spent, whatever the principal


def _exchange(stack, principal_id: str, secret: str, address: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/api/v1/auth/token", json={"principal_id": principal_id, "secret": secret},
                      headers={"X-Forwarded-For": address})  # uvicorn takes it from 127.0.0.1, as from a proxy


def _refused_after(per_minute: int, attempt) -> httpx.Response:
    """How many attempts fail (401) before one is refused (429): ``per_minute``, plus what refilled
    while the attempts ran (a bcrypt check each)."""
    started = time.monotonic()
    for i in range(200):
        answer = attempt(i)
        if answer.status_code == 429:
            assert per_minute <= i <= per_minute + (time.monotonic() - started) * per_minute / 60 + 1
            return answer
        assert answer.status_code == 401
    raise AssertionError("never refused")


def test_failed_token_exchanges_are_limited_per_principal(stack, admin):
    created = admin.post("/principals", json={"name": "limited", "permissions": []}).json()
    _refused_after(10, lambda i: _exchange(stack, created["id"], "wrong", f"198.51.100.{i}"))
    refused = _exchange(stack, created["id"], created["secret"], "198.51.100.99")
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 6
    assert "too many failed token requests" in refused.json()["detail"]
    assert _exchange(stack, "admin", "test-admin-secret", "198.51.100.99").status_code == 200  # others go on


def test_failed_token_exchanges_are_limited_per_address(stack):
    address = "203.0.113.7"
    refused = _refused_after(30, lambda i: _exchange(stack, f"nobody-{i}", "wrong", address))
    assert 1 <= int(refused.headers["retry-after"]) <= 2  # 30 a minute: one more every 2 s
    assert _exchange(stack, "admin", "test-admin-secret", "203.0.113.8").status_code == 200


def test_successful_token_exchanges_are_not_limited(stack):
    assert all(_exchange(stack, "admin", "test-admin-secret", "192.0.2.1").status_code == 200 for _ in range(15))


def test_opmas_up_prints_external_urls_without_their_passwords(capsys):
    stack = SimpleNamespace(nats_url="nats://svc:natspw@nats.example:4222",
                            db_url="postgresql://opmas:pgpw@db.example:5432/opmas",
                            archive_location="https://default:chpw@ch.example:8443", embedded=[], tls=None)
    _print_where(Config(data_dir=Path("/d"), pipeline=PipelineConfig(rules=(Path("/r"),))), stack)
    printed = capsys.readouterr().err
    assert "db.example:5432/opmas" in printed and "nats.example:4222" in printed
    assert not any(secret in printed for secret in ("natspw", "pgpw", "chpw"))


def test_a_405_names_the_methods_of_the_most_concrete_path_and_the_console_takes_no_api_path(admin):
    validate = admin.request("OPTIONS", "/rules/validate")  # also matches /rules/{rule_id}
    assert validate.status_code == 405 and validate.headers["Allow"] == "POST"
    one_rule = admin.request("TRACE", "/rules/some-rule")
    assert one_rule.status_code == 405 and one_rule.headers["Allow"] == "DELETE, GET, PUT"
    assert admin.get("/auth/token").status_code == 405  # POST only: not the console's page
    unknown = admin.get("/no-such-route")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "Not Found"  # the API's JSON 404
    page = admin.get(str(admin.base_url).replace("/api/v1", "/"))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]  # the console
