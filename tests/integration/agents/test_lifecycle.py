"""An agent's whole life on the real stack: register, token, publish, config change, heartbeat,
going stale then offline, restart with its stored credentials, clean stop."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from opmas.agents.sdk import AgentError, AgentSettings
from opmas.agents.tail import TailAgent
from tests.integration.agents.conftest import EventTap
from tests.waiting import wait_until


def settings(stack, tmp_path, **extra) -> AgentSettings:
    return AgentSettings(management_url=stack.url, nats_url=stack.nats_url, name="web-1 auth.log", type="tail",
                         credentials_file=tmp_path / "agent.json", **extra)


async def test_agent_whole_life(stack, admin, enroll_token, tmp_path):
    logfile = tmp_path / "auth.log"
    logfile.write_text("Nov 25 04:00:00 web-1 sshd[1]: an old line, not sent\n")
    agent = TailAgent(settings(stack, tmp_path, agent_id="life-1", enroll_token=enroll_token), [logfile])

    def status() -> dict:
        return admin.get("/agents/life-1").json()

    async with EventTap(stack.nats_url) as tap:
        await agent.start()
        assert (tmp_path / "agent.json").stat().st_mode & 0o777 == 0o600
        await wait_until(lambda: status()["status"] == "online", what="online", blocking=True)

        with logfile.open("a") as f:
            f.write("Nov 25 04:10:00 web-1 sshd[4410]: Failed password for invalid user admin "
                    "from 203.0.113.7 port 51290 ssh2\n")
            f.write('{"event": {"dataset": "web.access"}, "url": {"path": "/etc/passwd"}}\n')
        first, second = await tap.take(2)
        assert first["agent_id"] == "life-1" and first["type"] == "log"
        assert first["data"]["user"] == {"name": "admin"} and first["data"]["process"]["pid"] == 4410
        assert first["data"]["log"]["file"]["path"] == str(logfile)
        assert second["data"]["url"] == {"path": "/etc/passwd"}

        r = await asyncio.to_thread(admin.put, "/agents/life-1",
                                    json={"config": {"heartbeat_interval": 0.3, "labels": {"env": "test"}}})
        assert r.json()["config_version"] == 1
        await wait_until(lambda: agent.config_version == 1, what="config received", blocking=True)
        assert agent.config["heartbeat_interval"] == 0.3
        await wait_until(lambda: status()["applied_config_version"] == 1, what="config acknowledged", blocking=True)
        logfile.write_text("")  # copytruncate-style rotation
        with logfile.open("a") as f:
            f.write("Nov 25 04:11:00 web-1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash\n")
        (event,) = await tap.take(1)
        assert event["data"]["labels"] == {"env": "test"} and event["data"]["user"] == {"name": "alice"}

        # The agent dies without a word (its read position was saved): it goes stale, then offline.
        await wait_until(lambda: not agent._unsaved and agent.positions, what="position saved", blocking=True)
        for task in agent._tasks:
            task.cancel()
        await agent.on_stop()
        await agent.nc.close()
        await wait_until(lambda: status()["status"] == "stale", what="stale", blocking=True)
        await wait_until(lambda: status()["status"] == "offline", what="offline", blocking=True)
        await agent._http.aclose()

        with logfile.open("a") as f:
            f.write("Nov 25 04:12:00 web-1 sshd[9]: Accepted publickey for carol from 10.1.1.1 port 2 ssh2\n")

        # It comes back with its stored credentials (no enrollment token), resumes where it was
        # (the line written while it was down arrives), then stops cleanly.
        again = TailAgent(settings(stack, tmp_path), [logfile])
        await again.start()
        assert again.agent_id == "life-1"
        (missed,) = await tap.take(1)
        assert missed["data"]["user"] == {"name": "carol"}
        await wait_until(lambda: status()["status"] == "online", what="online again", blocking=True)
        await again.stop()
        await wait_until(lambda: status()["status"] == "offline", timeout=0.9, what="offline at once on stop", blocking=True)
    assert status()["info"]["type"] == "tail" and status()["info"]["stats"]["publish_errors"] == 0


async def test_registration_needs_a_token_with_agents_register(stack, admin, tmp_path):
    with pytest.raises(AgentError, match="no credentials"):
        await TailAgent(settings(stack, tmp_path), []).start()
    unreachable = AgentSettings(management_url="http://127.0.0.1:9", nats_url=stack.nats_url, name="x",
                                type="tail", enroll_token="t")
    with pytest.raises(AgentError, match="management at http://127.0.0.1:9"):
        await TailAgent(unreachable, []).start()
    p = admin.post("/principals", json={"name": "reader", "permissions": ["agents:read"]}).json()
    weak = stack.token(p["id"], p["secret"])
    with pytest.raises(AgentError, match="registration refused: 403"):
        await TailAgent(settings(stack, tmp_path, enroll_token=weak), []).start()


async def test_an_invalid_pushed_config_is_refused_and_reported(stack, admin, enroll_token, tmp_path):
    agent = TailAgent(settings(stack, tmp_path, agent_id="life-2", enroll_token=enroll_token), [])
    await agent.start()
    try:
        async with EventTap(stack.nats_url) as tap:  # an event over NATS' size is dropped, not blocking
            await agent.publish({"message": "x" * 2_000_000})
            await agent.publish({"message": "small"})
            assert await agent.flush()
            (event,) = await tap.take(1)
            batches = agent.stats.batches
            for _ in range(3):  # batches stay within a message's size
                await agent.publish({"message": "y" * 300_000})
            assert await agent.flush()
            assert len(await tap.take(3)) == 3 and agent.stats.batches - batches == 3
        assert event["data"] == {"message": "small"} and agent.stats.oversized == 1 and agent.settled == 5
        await agent.nc.publish("opmas.control.life-2", orjson.dumps(
            {"type": "config", "version": 7, "config": {"batch_size": "many"}}))
        await wait_until(lambda: agent.config_problems, what="config refused", blocking=True)
        assert agent.config_version == 0 and "batch_size" in agent.config_problems[0]
        await wait_until(lambda: admin.get("/agents/life-2").json()["info"].get("config_errors"),
                       what="errors reported in the heartbeat", blocking=True)
    finally:
        await agent.stop()


async def test_pushed_paths_outside_the_allowed_directories_are_refused(stack, admin, enroll_token, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    given, other, secret = logs / "app.log", logs / "other.log", tmp_path / "secret.txt"
    given.write_text("")
    secret.write_text("not for the agent\n")
    (logs / "link.log").symlink_to(secret)
    agent = TailAgent(settings(stack, tmp_path, agent_id="life-3", enroll_token=enroll_token,
                               config={"flush_interval": 0.05}), [given])
    await agent.start()
    try:
        async with EventTap(stack.nats_url) as tap:
            for outside in (str(secret), f"{logs}/../secret.txt", str(logs / "link.log")):
                await asyncio.to_thread(admin.put, "/agents/life-3",
                                        json={"config": {"tail": {"paths": [outside], "from_beginning": True}}})
                await wait_until(lambda: any(outside in p for p in agent.config_problems), what=f"{outside} refused", blocking=True)
            assert "outside the allowed directories" in agent.config_problems[0]
            assert agent.config_version == 0 and list(agent._followers) == [str(given)]
            await wait_until(lambda: admin.get("/agents/life-3").json()["info"].get("config_errors"),
                           what="refusal reported in the heartbeat", blocking=True)
            other.write_text("Nov 25 05:00:00 web-1 app: under the allowed directory\n")
            await asyncio.to_thread(admin.put, "/agents/life-3",
                                    json={"config": {"tail": {"paths": [str(other)], "from_beginning": True}}})
            (event,) = await tap.take(1)
        assert event["data"]["log"]["file"]["path"] == str(other) and agent.config_version == 4
        assert agent.config_problems == []
    finally:
        await agent.stop()
