"""Authentication and authorization: token exchange, 401 (missing, bad, expired, revoked), 403, 422."""
from __future__ import annotations

import statistics
import time

import httpx
import jwt

from tests.integration.apiserver import JWT_SECRET


def test_openapi_document_is_served(stack):
    doc = httpx.get(f"{stack.url}/api/v1/openapi.json").json()
    for path in ("/api/v1/agents", "/api/v1/findings/{finding_id}", "/api/v1/rules/{rule_id}/enable",
                 "/api/v1/events", "/api/v1/auth/token", "/metrics"):
        assert path in doc["paths"], path
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_every_route_needs_a_token(stack):
    with stack.client() as anonymous:
        for method, path in (("GET", "/agents"), ("GET", "/findings"), ("GET", "/rules"), ("GET", "/events"),
                             ("POST", "/events"), ("GET", "/auth/me"), ("GET", "/principals")):
            r = anonymous.request(method, path)
            assert r.status_code == 401, (method, path)
            assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{stack.url}/metrics").status_code == 401


def test_bad_tokens_are_401(stack):
    forged = jwt.encode({"sub": "admin", "jti": "x", "exp": int(time.time()) + 60}, "another secret of enough length for hs256!",
                        algorithm="HS256")
    expired = jwt.encode({"sub": "admin", "jti": "x", "exp": int(time.time()) - 5}, JWT_SECRET,
                         algorithm="HS256")
    unknown_jti = jwt.encode({"sub": "admin", "jti": "never-issued", "exp": int(time.time()) + 60},
                             JWT_SECRET, algorithm="HS256")
    for token, reason in (("garbage", "invalid token"), (forged, "invalid token"),
                          (expired, "token expired"), (unknown_jti, "revoked")):
        with stack.client(token) as client:
            r = client.get("/auth/me")
            assert r.status_code == 401
            assert reason in r.json()["detail"]


def test_a_token_expires(stack):
    token = stack.token(ttl=2)
    with stack.client(token) as client:
        assert client.get("/auth/me").status_code == 200
        time.sleep(3.1)
        r = client.get("/auth/me")
        assert r.status_code == 401 and r.json()["detail"] == "token expired"


def test_wrong_secret_is_401(stack):
    r = httpx.post(f"{stack.url}/api/v1/auth/token", json={"principal_id": "admin", "secret": "nope"})
    assert r.status_code == 401
    r = httpx.post(f"{stack.url}/api/v1/auth/token", json={"principal_id": "nobody", "secret": "nope"})
    assert r.status_code == 401


def test_an_unknown_principal_takes_as_long_as_a_wrong_secret(stack):
    """Both answers run a bcrypt check, so response times do not tell which principal ids exist."""
    def took(client: httpx.Client, principal_id: str) -> float:
        started = time.perf_counter()
        r = client.post("/auth/token", json={"principal_id": principal_id, "secret": "nope"})
        assert r.status_code == 401 and r.json()["detail"] == "unknown principal or wrong secret"
        return time.perf_counter() - started

    with stack.client() as client:
        times = [(took(client, "nobody-at-all"), took(client, "admin")) for _ in range(5)]
    unknown, known = (statistics.median(t) for t in zip(*times))
    assert unknown > 0.5 * known, (unknown, known)


def test_token_request_validation_is_422(stack):
    r = httpx.post(f"{stack.url}/api/v1/auth/token", json={"principal_id": "admin"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "secret"]


def test_permissions_are_enforced_and_principal_deletion_revokes(stack, admin):
    r = admin.post("/principals", json={"name": "analyst", "permissions": ["findings:read", "rules:read"]})
    assert r.status_code == 201
    analyst = r.json()
    token = stack.token(analyst["id"], analyst["secret"])
    with stack.client(token) as client:
        assert client.get("/findings").status_code == 200
        assert client.get("/rules").status_code == 200
        denied = client.post("/rules", json={"source": "title: x"})
        assert denied.status_code == 403 and denied.json()["detail"] == "missing permission rules:write"
        assert client.get("/agents").status_code == 403
        assert client.patch("/findings/00000000-0000-0000-0000-000000000000",
                            json={"status": "resolved"}).status_code == 403
        assert httpx.get(f"{stack.url}/metrics", headers=client.headers).status_code == 403
        assert client.get("/auth/me").json()["permissions"] == ["findings:read", "rules:read"]
        listed = admin.get("/principals", params={"limit": 100}).json()
        assert analyst["id"] in [p["id"] for p in listed["items"]]
        assert "secret_hash" not in listed["items"][0]
        assert admin.delete(f"/principals/{analyst['id']}").status_code == 204
        assert client.get("/findings").status_code == 401


def test_unknown_permission_is_422(stack, admin):
    r = admin.post("/principals", json={"name": "x", "permissions": ["findings:read", "root"]})
    assert r.status_code == 422
    assert "unknown permissions ['root']" in r.json()["detail"][0]["msg"]


def test_revoke_ends_every_token_of_the_caller(stack, admin):
    r = admin.post("/principals", json={"name": "temp", "permissions": ["rules:read"]}).json()
    first, second = stack.token(r["id"], r["secret"]), stack.token(r["id"], r["secret"])
    with stack.client(first) as client:
        assert client.post("/auth/revoke").status_code == 204
        assert client.get("/rules").status_code == 401
    with stack.client(second) as client:
        assert client.get("/rules").status_code == 401
