"""API starts on fresh servers: admin bootstrap (a generated secret printed once, or OPMAS_ADMIN_TOKEN),
the JWT signing secret kept under the data dir, rule files listed read-only, a database outage."""
from __future__ import annotations

import time

import httpx

from management.settings import ApiSettings
from management.rule_store import stored_rule_sources
from opmas.embedded import start_postgres
from tests.apiserver import ApiServer, api_settings
from tests.management.test_resources import RULE


def _token_status(server: ApiServer, secret: str) -> int:
    return httpx.post(f"{server.url}/api/v1/auth/token", json={"principal_id": "admin", "secret": secret}).status_code


def test_admin_bootstrap(nats_server, postgres, tmp_path, capfd):
    settings = api_settings(postgres.url, nats_server.url, tmp_path / "data", admin_token=None, jwt_secret=None)
    server = ApiServer(settings).start()
    try:
        banner = capfd.readouterr().err
        assert "secret:" in banner
        secret = banner.split("secret:", 1)[1].split()[0]
        assert _token_status(server, secret) == 200
    finally:
        server.stop()
    jwt_secret_file = tmp_path / "data" / "management" / "jwt_secret"
    assert jwt_secret_file.stat().st_mode & 0o777 == 0o600
    first_jwt_secret = jwt_secret_file.read_text()

    server = ApiServer(api_settings(postgres.url, nats_server.url, tmp_path / "data",
                                    admin_token=None, jwt_secret=None)).start()
    try:
        assert "secret:" not in capfd.readouterr().err  # printed once only
        assert _token_status(server, secret) == 200
    finally:
        server.stop()
    assert jwt_secret_file.read_text() == first_jwt_secret

    env = {"OPMAS_ADMIN_TOKEN": "chosen-admin-secret", "OPMAS_API_PORT": str(settings.port + 0)}
    from_env = ApiSettings.from_env(postgres.url, nats_server.url, env=env, data_dir=tmp_path / "data",
                                    liveness_interval=1.0)
    assert from_env.admin_token == "chosen-admin-secret" and from_env.port == settings.port
    server = ApiServer(from_env).start()
    try:
        assert _token_status(server, "chosen-admin-secret") == 200
        assert _token_status(server, secret) == 401  # the environment's secret replaced the generated one
    finally:
        server.stop()


def test_database_outage_is_503_then_recovers(nats_server, postgres, tmp_path):
    server = ApiServer(api_settings(postgres.url, nats_server.url, tmp_path / "data")).start()
    try:
        with server.client(server.token()) as client:
            assert client.get("/agents").status_code == 200
            postgres.stop()
            r = client.get("/agents")
            assert r.status_code == 503 and r.json()["detail"] == "database unavailable, retry later"
            restarted = start_postgres(postgres.data_dir)
            try:
                for _ in range(100):
                    if (r := client.get("/agents")).status_code == 200:
                        break
                    time.sleep(0.1)
                assert r.status_code == 200
            finally:
                restarted.stop()
    finally:
        server.stop()


def test_rule_files_are_listed_read_only(nats_server, postgres, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    file_rule = RULE.replace("-000000000001", "-0000000000f1")
    (rules / "file_rule.yml").write_text(file_rule)
    server = ApiServer(api_settings(postgres.url, nats_server.url, tmp_path / "data", rule_paths=(rules,))).start()
    try:
        with server.client(server.token()) as client:
            listed = client.get("/rules", params={"origin": "file"}).json()
            assert listed["total"] == 1 and listed["items"][0]["path"] == str(rules / "file_rule.yml")
            rule_id = listed["items"][0]["id"]
            assert client.put(f"/rules/{rule_id}", json={"source": file_rule}).status_code == 409
            assert client.post(f"/rules/{rule_id}/disable").status_code == 409
            duplicate = client.post("/rules", json={"source": file_rule})
            assert duplicate.status_code == 422 and "duplicate rule id" in duplicate.text
            assert client.post("/rules", json={"source": RULE}).status_code == 201
            assert client.get("/rules", params={"origin": "api"}).json()["total"] == 1
            assert client.get("/rules").json()["total"] == 2
    finally:
        server.stop()
    assert [s.name for s in stored_rule_sources(postgres.url)] == ["rules:5a6b7c8d-0000-4000-8000-000000000001"]
