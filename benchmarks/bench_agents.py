"""Agent benchmark: the file tailer reading an auth.log into JetStream, on the embedded servers.

A file of N syslog auth lines is tailed from its start by a ``TailAgent`` (registered through
the management API, which runs in the same process) until JetStream has stored every event:
lines parsed to the field conventions, batched as JSON lines, acknowledged by the stream.
Printed: events/s (wall clock), CPU seconds of this process (agent + API + parsing), peak RSS.

    python -m benchmarks.bench_agents [--lines 200000] [--batch-size 1000]
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

import httpx
import nats

from opmas.agents.sdk import AgentSettings
from opmas.agents.tail import TailAgent
from opmas.connectors.nats.subjects import ensure_streams
from opmas.api.service import serve
from opmas.api.settings import ApiSettings
from opmas.runtime.embedded import free_port, start_nats, start_postgres

LINES = [
    "Nov 25 04:{m:02d}:{s:02d} web-{h} sshd[{pid}]: Failed password for invalid user admin from 203.0.113.{ip} port {port} ssh2",
    "Nov 25 04:{m:02d}:{s:02d} web-{h} sshd[{pid}]: Accepted publickey for deploy from 10.0.{h}.{ip} port {port} ssh2",
    "Nov 25 04:{m:02d}:{s:02d} web-{h} sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls",
    "Nov 25 04:{m:02d}:{s:02d} web-{h} CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
]


def write_log(path: Path, count: int) -> None:
    with path.open("w") as f:
        for i in range(count):
            f.write(LINES[i % len(LINES)].format(m=(i // 60) % 60, s=i % 60, h=i % 7, pid=1000 + i % 5000,
                                                 ip=i % 250, port=40000 + i % 20000) + "\n")


async def run(lines: int, batch_size: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="opmas-bench-agents-"))
    nats_server, postgres = start_nats(base / "nats"), start_postgres(base / "pg")
    settings = ApiSettings(db_url=postgres.url, nats_url=nats_server.url, data_dir=base / "data",
                           port=free_port(), jwt_secret="b" * 40, admin_token="bench-admin")
    stop = asyncio.Event()
    api = asyncio.create_task(serve(settings, stop))
    url = f"http://127.0.0.1:{settings.port}"
    try:
        async with httpx.AsyncClient(base_url=f"{url}/api/v1") as client:
            for _ in range(200):
                try:
                    r = await client.post("/auth/token", json={"principal_id": "admin", "secret": "bench-admin"})
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            token = r.json()["access_token"]
        nc = await nats.connect(nats_server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        log = base / "auth.log"
        write_log(log, lines)
        agent = TailAgent(AgentSettings(management_url=url, nats_url=nats_server.url, name="bench", type="tail",
                                        enroll_token=token, config={"batch_size": batch_size}),
                          [log], from_beginning=True)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await agent.start()
        while agent.stats.published < lines:
            await asyncio.sleep(0.01)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await agent.stop()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"tail agent: {lines} lines -> JetStream in {wall:.2f} s: {lines / wall:,.0f} events/s "
              f"(wall), {cpu:.2f} CPU s ({lines / cpu:,.0f} events per CPU s), batches {agent.stats.batches}, "
              f"peak RSS {peak:.0f} MiB")
    finally:
        stop.set()
        await api
        nats_server.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.lines, args.batch_size))


if __name__ == "__main__":
    main()
