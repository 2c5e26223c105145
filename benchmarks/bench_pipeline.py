"""End-to-end pipeline benchmark on the embedded stack.

replay (a subprocess: ``opmas replay --rate max``, JSON lines of ``--batch`` events per
message) -> NATS JetStream -> the engine (this process: partition processors, 100
rules by default) -> ClickHouse archive (chdb, in-process) + findings to PostgreSQL
and NATS -> ack. Prints events/s end to end (from the first event's arrival in
JetStream to the last ack, every sink written), the replay's own rate, end-to-end latency per message (JetStream arrival ->
ack, after every sink) p50/p99, and the engine process's peak RSS.

    python -m benchmarks.bench_pipeline [--events 200000] [--rules 100] [--kind windows]
                                        [--partitions 4] [--workers 2] [--batch 100] [--rate max|N]
                                        [--envelopes]

The machine's 2 cores are shared (NATS, PostgreSQL, replay and the engine compete,
and so do other users of the machine): events/s vary from run to run with the load.
The CPU line does not: it sums the CPU time the pipeline's processes (engine with its
in-process ClickHouse, evaluators, nats-server, replay; not PostgreSQL, which only
receives findings) spent per event, and the throughput two idle cores would give.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from benchmarks.bench_rules import bench_rules
from benchmarks.generate import generate
from connectors.clickhouse.archive import Archive, connect
from connectors.nats.subjects import EVENTS_STREAM
from opmas.config import Config
from opmas.embedded import start_nats, start_postgres
from opmas.runtime.pipeline import Pipeline


def _cpu(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far (threads included)."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else (
        values[0] if values else float("nan"))


async def _run(args: argparse.Namespace, work: Path) -> None:
    events_file = work / "events.jsonl"
    with open(events_file, "wb") as out:
        for i, obj in enumerate(generate(args.kind, args.events, seed=1)):
            if args.envelopes:  # as agents send them: with an id, so the engine needs no content hash
                obj = {"id": f"bench-{i}", "agent_id": f"agent-{i % 16}", "type": args.kind, "data": obj}
            out.write(orjson.dumps(obj) + b"\n")
    rules_dir = work / "rules"
    rules_dir.mkdir()
    for source in bench_rules(args.rules):
        (rules_dir / source.name).write_text(source.text)
    nats = start_nats(work / "nats")
    postgres = start_postgres(work / "pg")
    archive = Archive(connect(None, work / "chdb"))
    config = Config(data_dir=work, nats_url=nats.url, db_url=postgres.url, rules=(rules_dir,),
                    partitions=args.partitions, workers=args.workers, watch_rules=False)
    pipeline = Pipeline(config, nats.url, postgres.url, archive)
    pipeline.stats.keep_latencies = True
    stop = asyncio.Event()
    engine = asyncio.create_task(pipeline.run(stop))
    try:
        await asyncio.wait_for(pipeline.ready.wait(), 120)
        processes = [psutil.Process(), psutil.Process(nats.process.pid)] + [
            psutil.Process(proc.pid) for proc in pipeline.pool._procs]
        cpu_before = _cpu(processes)
        children_before = _children_cpu()
        started = time.time()
        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opmas.cli", "replay", str(events_file), "--nats", nats.url,
            "--batch", str(args.batch), "--rate", str(args.rate), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, replay_err = await replay.communicate()
        replay_done = time.time()
        replay_cpu = _children_cpu() - children_before
        if replay.returncode:
            raise SystemExit(f"replay failed: {replay_err.decode()}")
        last = (await pipeline.js.stream_info(EVENTS_STREAM)).state.last_seq
        while pipeline.stats.acked_seq < last:
            if engine.done():
                engine.result()
            await asyncio.sleep(0.02)
        finished = time.time()
        pipeline_cpu = _cpu(processes) - cpu_before
        archived = await asyncio.to_thread(archive.count)
    finally:
        stop.set()
        await engine
        archive.close()
        postgres.stop()
        nats.stop()
    stats = pipeline.stats
    elapsed = finished - stats.first_time
    lat = sorted(stats.latencies)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pipeline benchmark: {args.events:,} {args.kind} events, {pipeline.rule_count} rules, "
          f"{args.partitions} partitions, {args.workers} evaluator processes, {args.batch} events/message, "
          f"replay rate {args.rate}{', envelopes' if args.envelopes else ', raw events'}")
    print(f"  end to end:   {stats.events / elapsed:,.0f} events/s ({stats.events:,} events in {elapsed:.2f}s "
          "from the first event's arrival in JetStream to the last ack)")
    print(f"  replay:       {args.events / (replay_done - started):,.0f} events/s published")
    print(f"  latency:      p50 {_percentile(lat, 0.50) * 1000:.0f} ms, p99 {_percentile(lat, 0.99) * 1000:.0f} ms "
          f"(per message, JetStream arrival -> ack after all sinks)")
    print(f"  findings:     {stats.findings:,}; archived events (FINAL): {archived:,}")
    cpu = pipeline_cpu + replay_cpu
    print(f"  CPU:          {cpu:.1f} core-s in all ({pipeline_cpu:.1f} engine + evaluators + nats-server, "
          f"{replay_cpu:.1f} replay) = {cpu / stats.events * 1e6:.0f} us per event, i.e. "
          f"{2 * stats.events / cpu:,.0f} events/s on 2 idle cores")
    print(f"  peak memory:  {peak_mb:,.0f} MiB RSS (engine process, incl. in-process ClickHouse)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--kind", default="windows", help="event kind of benchmarks.generate")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="evaluator processes (0: in the engine process)")
    parser.add_argument("--batch", type=int, default=100, help="events per NATS message")
    parser.add_argument("--envelopes", action="store_true",
                        help="wrap events in envelopes with ids (agent SDK style) instead of raw events")
    parser.add_argument("--rate", default="max", help="replay rate in events/s (latency below saturation), or max")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="opmas-bench-") as work:
        asyncio.run(_run(args, Path(work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
