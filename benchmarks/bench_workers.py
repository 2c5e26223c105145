"""Scale-out benchmark: events/s of the Faust workers with 1 and 2 workers, on a local Tansu broker.

    python -m benchmarks.bench_workers [-n 100000] [--workers 1 2] [--partitions 4]

Starts NATS, PostgreSQL and Tansu, publishes a generated mixed log (Windows process
creation, Linux auth, web access; JSON lines, 100 events per message) to NATS once;
then, for each worker count, on a fresh broker: ``opmas bridge`` fills the Kafka topic
(its rate is printed), and the workers (``opmas worker`` processes, the repo's rules)
process the whole topic, findings into NATS and PostgreSQL. Rate = events committed after
the first commit seen / time from it to the last commit (workers commit every second, so
short runs round). Printed with each run: CPU seconds of the workers and of Tansu, how busy the
whole machine was meanwhile, and the workers' peak RSS. The numbers depend on how much
of the (shared) CPU the machine gives; the CPU figures tell what limits throughput.
Batches wait up to OPMAS_BATCH_WAIT (default here 0.25 s, as in deploy/configmap.yaml).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.generate import generate
from opmas.runtime.bridge import DURABLE
from opmas.runtime.tansu import TansuBroker, start_tansu
from opmas.connectors.nats.subjects import EVENTS_STREAM, ensure_streams, events_subject
from opmas.connectors.postgres.migrations import migrate
from opmas.runtime.embedded import start_nats, start_postgres
PROJECT_ROOT = Path(__file__).resolve().parent.parent
from opmas.runtime.faust_worker import APP_ID

TOPIC = "opmas-events"
PER_MESSAGE = 100
AGENTS = 16


@dataclass
class Proc:
    process: subprocess.Popen

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def spawn(command: str, env: dict[str, str], log: Path) -> Proc:
    return Proc(subprocess.Popen([sys.executable, "-m", "opmas.cli", command], cwd=PROJECT_ROOT, env=env,
                                 stdout=open(log, "ab"), stderr=subprocess.STDOUT))


async def publish(url: str, count: int) -> None:
    events = list(generate("mixed", count, seed=5))
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for i, start in enumerate(range(0, count, PER_MESSAGE)):
        payload = b"\n".join(orjson.dumps(e) for e in events[start:start + PER_MESSAGE])
        await js.publish(events_subject(f"agent-{i % AGENTS}"), payload)
    await nc.close()


async def reset(nats_url: str, db_url: str) -> None:
    """Fresh bridge position and empty findings tables, for the next run."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_consumer(EVENTS_STREAM, DURABLE)
    except nats.js.errors.NotFoundError:
        pass
    await nc.close()
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await migrate(conn)
        await conn.execute("TRUNCATE findings, events")


async def acked_by_bridge(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(EVENTS_STREAM, DURABLE)
        return info.ack_floor.stream_seq if info.ack_floor else 0
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


def wait_bridged(nats_url: str, messages: int, timeout: float = 1800) -> float:
    """Poll until the bridge acknowledged every message; returns when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(acked_by_bridge(nats_url)) >= messages:
            return time.monotonic()
        time.sleep(0.2)
    raise TimeoutError("the bridge did not forward every message")


async def records_in_topic(broker: TansuBroker, partitions: int) -> int:
    """Records in the events topic, counted by reading it (Tansu's end offsets are unreliable)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.url, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        total = 0
        while batches := await consumer.getmany(timeout_ms=2000, max_records=10_000):
            total += sum(len(messages) for messages in batches.values())
        return total
    finally:
        await consumer.stop()


async def committed(broker: TansuBroker, partitions: int, group: str) -> int:
    """Sum of ``group``'s committed offsets over the topic: records done."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.url, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([(await consumer.committed(TopicPartition(TOPIC, p))) or 0 for p in range(partitions)])
    finally:
        await consumer.stop()


def wait_committed(broker: TansuBroker, partitions: int, group: str, target: int,
                   timeout: float = 1800) -> tuple[float, int, float]:
    """Poll until ``group`` committed ``target`` records; returns (time of the first commit seen, records
    committed then, time of the last)."""
    first, done_first = None, 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = asyncio.run(committed(broker, partitions, group))
        except Exception:  # group coordinator not ready yet
            done = 0
        now = time.monotonic()
        if done and first is None:
            first, done_first = now, done
        if done >= target:
            return (first, done_first, now) if first is not None else (now, done, now)
        time.sleep(0.2)
    raise TimeoutError(f"{group} stuck below {target} committed records")


def run(workers: int, count: int, partitions: int, env: dict[str, str], tmp: Path) -> None:
    broker = start_tansu(log_file=tmp / f"tansu-{workers}.log")
    try:
        env = {**env, "OPMAS_KAFKA_URL": broker.url}
        asyncio.run(reset(env["NATS_URL"], env["OPMAS_DB_URL"]))
        start = time.monotonic()
        bridge = spawn("bridge", env, tmp / f"bridge-{workers}.log")
        end = wait_bridged(env["NATS_URL"], -(-count // PER_MESSAGE))
        bridge_cpu = bridge.cpu_seconds()
        bridge.stop()
        print(f"  bridge: {count / (end - start):,.0f} events/s into Kafka (incl. start-up),"
              f" {bridge_cpu:.1f} CPU s")
        procs = [spawn("worker", env, tmp / f"worker-{workers}-{i}.log") for i in range(workers)]
        tansu_cpu0 = Proc(broker.process).cpu_seconds()
        records = asyncio.run(records_in_topic(broker, partitions))
        busy0, total0 = cpu_ticks()
        first, done_first, end = wait_committed(broker, partitions, APP_ID, records)
        # the records committed by the first poll took time before it: count only the ones after
        timed = count * (records - done_first) / records
        busy1, total1 = cpu_ticks()
        cpu = sum(p.cpu_seconds() for p in procs)
        rss = max(p.peak_rss_mb() for p in procs)
        tansu_cpu = Proc(broker.process).cpu_seconds() - tansu_cpu0
        for p in procs:
            p.stop()
        with psycopg.connect(env["OPMAS_DB_URL"]) as conn:
            findings = conn.execute("SELECT count(*) FROM findings").fetchone()[0]
        print(f"  {workers} worker(s): {timed / max(end - first, 1e-9):,.0f} events/s"
              f" ({timed:,.0f} of {count:,} events in {end - first:.1f} s between first and last commit,"
              f" {findings:,} findings);"
              f" CPU s: workers {cpu:.1f} (incl. start-up), tansu {tansu_cpu:.1f}; machine CPU busy"
              f" {100 * (busy1 - busy0) / max(1, total1 - total0):.0f}% (all processes, all users);"
              f" worker peak RSS {rss:.0f} MB")
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="opmas-bench-workers-") as tmpdir:
        tmp = Path(tmpdir)
        nats_server = start_nats(tmp / "nats")
        postgres = start_postgres(tmp / "pg")
        try:
            env = {**os.environ, "NATS_URL": nats_server.url, "OPMAS_DB_URL": postgres.url,
                   "OPMAS_PARTITIONS": str(args.partitions), "OPMAS_DATA_DIR": str(tmp / "data"),
                   "OPMAS_LOG_LEVEL": "WARNING", "OPMAS_BATCH_WAIT": os.environ.get("OPMAS_BATCH_WAIT", "0.25")}
            asyncio.run(publish(nats_server.url, args.events))
            print(f"{args.events:,} mixed events, {args.partitions} partitions, {os.cpu_count()} CPUs"
                  f" (load average {os.getloadavg()[0]:.1f} at start)")
            for workers in args.workers:
                run(workers, args.events, args.partitions, env, tmp)
        finally:
            postgres.stop()
            nats_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
