"""`opmas agent tail` and `opmas api nats-auth` as a user runs them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

from tests.integration.agents.conftest import EventTap
from tests.waiting import wait_until


async def test_opmas_agent_tail_runs_publishes_and_stops_on_sigterm(stack, admin, enroll_token, tmp_path):
    """The agent reads the configuration every command reads: the API's port from the YAML file,
    NATS and the data dir (where its credentials go) from the environment, the enrollment token
    from the environment (never a flag: command lines show in ``ps``). No URL flag is given."""
    logfile = tmp_path / "secure"
    logfile.write_text("")
    port = urlsplit(stack.url).port
    config = tmp_path / "opmas.yaml"
    config.write_text(f"api:\n  port: {port}\n")
    env = {**os.environ, "OPMAS_CONFIG": "", "NATS_URL": stack.nats_url, "OPMAS_DATA_DIR": str(tmp_path / "data"),
           "OPMAS_ENROLL_TOKEN": enroll_token, "OPMAS_API_URL": "", "OPMAS_API_HOST": "", "OPMAS_API_PORT": ""}
    command = [sys.executable, "-m", "opmas.cli", "agent", "tail", str(logfile), "--id", "cli-tail",
               "--name", "cli-tail", "--config", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        async with EventTap(stack.nats_url) as tap:
            await wait_until(lambda: admin.get("/agents/cli-tail").json().get("status") == "online", 30, "online", blocking=True)
            with logfile.open("a") as f:
                f.write("Nov 25 05:00:00 bastion sshd[77]: Invalid user test from 198.51.100.20 port 60000\n")
            (event,) = await tap.take(1)
        assert event["agent_id"] == "cli-tail" and event["data"]["user"] == {"name": "test"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]  # structured JSON logs
    stopped = [entry for entry in logs if entry["message"] == "agent stopped"]
    assert stopped and stopped[0]["agent_id"] == "cli-tail" and stopped[0]["published"] == 1
    await wait_until(lambda: admin.get("/agents/cli-tail").json()["status"] == "offline", 5, "offline", blocking=True)
    credentials = tmp_path / "data" / "agents" / "cli-tail.json"
    assert json.loads(credentials.read_text())["agent_id"] == "cli-tail"


def test_opmas_agent_without_credentials_says_what_is_missing(stack, tmp_path):
    r = subprocess.run([sys.executable, "-m", "opmas.cli", "agent", "syslog", "--port", "0",
                        "--management-url", stack.url, "--nats-url", stack.nats_url,
                        "--credentials", str(tmp_path / "none.json")],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "OPMAS_ENROLL_TOKEN": ""})
    assert r.returncode == 2 and "no credentials" in r.stderr


def test_opmas_api_nats_auth_lists_registered_agents(stack, admin, tmp_path):
    admin.post("/agents", json={"id": "cli-nats", "name": "n", "type": "t"})
    env = {**os.environ, "OPMAS_DB_URL": stack.db_url, "NATS_URL": stack.nats_url,
           "OPMAS_NATS_SERVICE_PASSWORD": "pw-for-the-service-user"}
    out = tmp_path / "auth.conf"
    r = subprocess.run([sys.executable, "-m", "opmas.cli", "api", "nats-auth", "--out", str(out)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert '{user: "cli-nats", password: "$2' in text and '"opmas.control.cli-nats"' in text
    assert out.stat().st_mode & 0o777 == 0o600
    missing = subprocess.run([sys.executable, "-m", "opmas.cli", "api"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "OPMAS_DB_URL": "", "NATS_URL": "", "OPMAS_CONFIG": ""})
    assert missing.returncode == 2 and "needs OPMAS_DB_URL and NATS_URL" in missing.stderr
