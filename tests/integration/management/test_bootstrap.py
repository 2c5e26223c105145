"""API starts on fresh servers: admin bootstrap (a generated secret handed over once, on the terminal or
in a 0600 file, never in a log; or OPMAS_ADMIN_TOKEN), the JWT signing secret kept under the data dir,
rule files listed read-only, a database outage."""
from __future__ import annotations

import io
import logging
import time

import httpx

from opmas.api.bootstrap import admin_secret_path, deliver_admin_secret
from opmas.api.settings import ApiSettings
from opmas.config import load_config
from opmas.connectors.postgres.rule_store import stored_rule_sources
from opmas.runtime.embedded import start_postgres
from opmas.logs import JsonFormatter
from tests.integration.apiserver import ApiServer, api_settings
from tests.integration.management.test_resources import RULE


def _token_status(server: ApiServer, secret: str) -> int:
    return httpx.post(f"{server.url}/api/v1/auth/token", json={"principal_id": "admin", "secret": secret}).status_code


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_generated_admin_secret_goes_to_the_terminal_only(tmp_path):
    terminal = _Terminal()
    assert deliver_admin_secret("s3cret-value", "http://h:1", tmp_path, terminal) is None
    assert "secret:       s3cret-value" in terminal.getvalue() and "curl" in terminal.getvalue()
    assert not admin_secret_path(tmp_path).exists()
    piped = io.StringIO()  # stderr redirected to a file or a pipe: not a terminal
    path = deliver_admin_secret("s3cret-value", "http://h:1", tmp_path, piped)
    assert piped.getvalue() == "" and path == admin_secret_path(tmp_path)
    assert "s3cret-value" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


def test_admin_bootstrap(nats_server, postgres, tmp_path, capfd):
    """Without a terminal (as under pytest) the generated secret is written to a 0600 file whose path is
    logged; neither stderr nor any log line holds it."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    settings = api_settings(postgres.url, nats_server.url, tmp_path / "data", admin_token=None, jwt_secret=None)
    try:
        server = ApiServer(settings).start()
    finally:
        root.removeHandler(handler)
    secret_file = admin_secret_path(tmp_path / "data")
    try:
        assert secret_file.stat().st_mode & 0o777 == 0o600
        secret = secret_file.read_text().split("secret:", 1)[1].split()[0]
        assert secret not in capfd.readouterr().err and secret not in lines.getvalue()
        assert str(secret_file) in lines.getvalue()  # the log says where it is
        assert _token_status(server, secret) == 200
    finally:
        server.stop()
    secret_file.unlink()
    jwt_secret_file = tmp_path / "data" / "management" / "jwt_secret"
    assert jwt_secret_file.stat().st_mode & 0o777 == 0o600
    first_jwt_secret = jwt_secret_file.read_text()

    server = ApiServer(api_settings(postgres.url, nats_server.url, tmp_path / "data",
                                    admin_token=None, jwt_secret=None)).start()
    try:
        assert not secret_file.exists()  # handed over once only
        assert _token_status(server, secret) == 200
    finally:
        server.stop()
    assert jwt_secret_file.read_text() == first_jwt_secret

    env = {"OPMAS_ADMIN_TOKEN": "chosen-admin-secret", "OPMAS_API_PORT": str(settings.port + 0)}
    from_env = ApiSettings.from_config(load_config(env=env), postgres.url, nats_server.url,
                                       data_dir=tmp_path / "data", liveness_interval=1.0)
    assert from_env.admin_token == "chosen-admin-secret" and from_env.port == settings.port
    server = ApiServer(from_env).start()
    try:
        assert _token_status(server, "chosen-admin-secret") == 200
        assert _token_status(server, secret) == 401  # the environment's secret replaced the generated one
    finally:
        server.stop()


def test_database_outage_is_503_then_recovers(nats_server, own_postgres, tmp_path):
    server = ApiServer(api_settings(own_postgres.url, nats_server.url, tmp_path / "data")).start()
    try:
        with server.client(server.token()) as client:
            assert client.get("/agents").status_code == 200
            own_postgres.stop()
            r = client.get("/agents")
            assert r.status_code == 503 and r.json()["detail"] == "database unavailable, retry later"
            restarted = start_postgres(own_postgres.data_dir)
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
