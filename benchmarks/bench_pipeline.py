"""End-to-end pipeline benchmark on the embedded stack.

replay (a subprocess: ``opmas replay --rate max``, JSON lines of ``--batch`` events per
message) -> NATS JetStream -> the engine (this process: partition processors in
``--workers`` evaluator processes) -> ClickHouse archive (chdb, in-process) + findings and the
events they cite to PostgreSQL and findings to NATS -> ack. Prints events/s end to end (from the
first event's arrival in JetStream to the last ack, every sink written), the finding rate
(findings per event), the replay's own rate, end-to-end latency per message (JetStream arrival
-> ack, after every sink: the finding is stored) p50/p99, the CPU each process spent per event,
and the peak RSS (VmHWM) of each process: engine (with the in-process ClickHouse), each
evaluator, nats-server, PostgreSQL (all its backends together) and replay. The engine logs as
``opmas up`` does (JSON lines at INFO, one per finding), to a file of the run.

    python -m benchmarks.bench_pipeline [--events 200000] [--rules 100] [--kind windows]
                                        [--sigma DIR --corpus quiet|storm]
                                        [--partitions 4] [--workers 2] [--batch 100] [--rate max|N]
                                        [--latency-at 0.8] [--envelopes]

Events: generated (``benchmarks.generate``, ``--kind``) against ``--rules`` generated bench
rules; or, with ``--sigma DIR``, the rules of DIR (e.g. SigmaHQ's ``rules/windows``) against
the ``--corpus`` of ``benchmarks.sigma_corpus``: ``quiet`` has 0.5% of events built to give a
finding, ``storm`` 60%. Those events are the ``rule_events`` of DIR's rules that give a
finding (each checked alone with ``opmas.core.processor.Processor``), built afresh on every run.
Floors (issue 10): 30,000 events/s quiet, 15,000 storm; p99 below 1 s at 80% of saturation.

``--latency-at 0.8`` runs twice, each on a fresh stack: at ``--rate`` (max by default) for
the saturation rate, then paced at 0.8 x that rate for the p99 latency below saturation.

The machine's 2 cores are shared (NATS, PostgreSQL, replay and the engine compete,
and so do other users of the machine): events/s vary from run to run with the load.
The CPU line does not: it sums the CPU time the pipeline's processes (engine with its
in-process ClickHouse, evaluators, nats-server, replay; not PostgreSQL, shown apart)
spent per event, and the throughput two idle cores would give.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil

from benchmarks.bench_rules import bench_rules
from benchmarks.generate import generate
from benchmarks.memory import peak_rss_mib, reset_peak
from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.config import Config, NatsConfig, PipelineConfig, PostgresConfig
from opmas.runtime.embedded import start_nats, start_postgres
from opmas.logs import setup_logging
from opmas.runtime.pipeline import Pipeline

FLOOR_RATE = {"quiet": 30_000, "storm": 15_000}
FLOOR_P99 = 1.0  # seconds, at 80% of the saturation rate
CORPUS_SHARE = {"quiet": 0.005, "storm": 0.6}


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else (
        values[0] if values else float("nan"))


def _cpu(process: psutil.Process, children: bool = False) -> float:
    """User + system CPU seconds of ``process`` so far (threads included; with ``children``, also
    its children that exited and were waited for, as PostgreSQL's backends)."""
    times = process.cpu_times()
    return times.user + times.system + (times.children_user + times.children_system if children else 0.0)


def write_events(args: argparse.Namespace, path: Path) -> str:
    """Write the benchmark's events as JSON lines; returns what they are. Run in a child process, so
    neither the corpus nor the rule set built to check it counts in the engine process's memory."""
    with open(path, "wb") as out:
        if args.sigma:
            from benchmarks.sigma_corpus import rule_documents, rule_events, storm_events
            from opmas.core.envelope import event_from_obj
            from opmas.core.processor import Processor
            from opmas.core.ruleset import load_ruleset, sources_from_paths

            docs = rule_documents(args.sigma)
            candidates = rule_events(docs)
            processor = Processor(load_ruleset(sources_from_paths([args.sigma]))[0])
            matching = [obj for obj in candidates if processor.process([event_from_obj(obj)]).findings]
            objects = storm_events(args.events, matching, CORPUS_SHARE[args.corpus])
            what = (f"SigmaHQ corpus {args.corpus} ({CORPUS_SHARE[args.corpus]:.1%} drawn from the {len(matching):,} "
                    f"rule events that give a finding, of {len(candidates):,} built from {len(docs):,} rules)")
        else:
            objects = generate(args.kind, args.events, seed=1)
            what = f"generated {args.kind} events"
        for i, obj in enumerate(objects):
            if args.envelopes:  # as agents send them: with an id, so the engine needs no content hash
                obj = {"id": f"bench-{i}", "agent_id": f"agent-{i % 16}", "type": args.kind, "data": obj}
            out.write(orjson.dumps(obj) + b"\n")
    return what


@dataclass
class RunResult:
    """One run of the pipeline over the whole events file."""

    rate: str  # the replay's pacing
    rules: int = 0
    events: int = 0
    messages: int = 0
    findings: int = 0
    dead_letters: int = 0
    archived: int = 0
    elapsed: float = 0.0  # first arrival in JetStream -> last ack
    replay_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds during the run
    peaks: dict[str, float] = field(default_factory=dict)  # process -> peak RSS MiB

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed else float("nan")


def _replay(command: list[str], log: Path) -> tuple[int, float, float, float]:
    """Run the replay; its exit code, seconds, CPU seconds and peak RSS MiB (from its rusage)."""
    started = time.monotonic()
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


async def run_once(args: argparse.Namespace, work: Path, events_file: Path, rules_dir: Path,
                   rate: str) -> RunResult:
    """Start NATS, PostgreSQL, chdb and the engine in ``work``, replay ``events_file`` at ``rate``,
    wait for the last ack, stop everything."""
    out = RunResult(rate)
    reset_peak(os.getpid())
    nats = start_nats(work / "nats")
    postgres = start_postgres(work / "pg")
    archive = Archive(connect(None, work / "chdb"))
    config = Config(data_dir=work, nats=NatsConfig(url=nats.url), postgres=PostgresConfig(url=postgres.url),
                    pipeline=PipelineConfig(rules=(rules_dir,), partitions=args.partitions, workers=args.workers,
                                            watch_rules=False))
    pipeline = Pipeline.over_nats(config, nats.url, postgres.url, archive)
    pipeline.stats.keep_latencies = True
    stop = asyncio.Event()
    engine = asyncio.create_task(pipeline.run(stop))
    try:
        ready = asyncio.create_task(pipeline.ready.wait())
        await asyncio.wait([engine, ready], timeout=300, return_when=asyncio.FIRST_COMPLETED)
        if engine.done():
            engine.result()
        postmaster = psutil.Process(int((work / "pg" / "postmaster.pid").read_text().split()[0]))
        processes = {"engine": psutil.Process()}
        processes.update((f"evaluator-{i}", psutil.Process(proc.pid)) for i, proc in enumerate(pipeline.pool._procs))
        processes["nats-server"] = psutil.Process(nats.process.pid)
        before = {name: _cpu(p) for name, p in processes.items()}
        pg_before = _cpu(postmaster, children=True) + sum(_cpu(c) for c in postmaster.children())
        command = [sys.executable, "-m", "opmas.cli", "replay", str(events_file), "--nats", nats.url,
                   "--batch", str(args.batch), "--rate", rate]
        code, out.replay_seconds, replay_cpu, replay_peak = await asyncio.to_thread(
            _replay, command, work / "replay.log")
        if code:
            raise SystemExit(f"replay failed: {(work / 'replay.log').read_text()}")
        last = await pipeline.io.source.end()
        while pipeline.stats.acked_seq < last:
            if engine.done():
                engine.result()
            await asyncio.sleep(0.02)
        finished = time.time()
        out.cpu = {name: _cpu(p) - before[name] for name, p in processes.items()}
        out.cpu["replay"] = replay_cpu
        out.cpu["PostgreSQL"] = _cpu(postmaster, children=True) + sum(
            _cpu(c) for c in postmaster.children()) - pg_before
        out.peaks = {name: peak_rss_mib(p.pid) for name, p in processes.items()}
        out.peaks["PostgreSQL"] = max(peak_rss_mib(c.pid) for c in [postmaster, *postmaster.children()])
        out.peaks["replay"] = replay_peak
        out.archived = await asyncio.to_thread(archive.count)
    finally:
        stop.set()
        await engine
        archive.close()
        postgres.stop()
        nats.stop()
    stats = pipeline.stats
    out.rules = pipeline.rule_count
    out.events, out.messages, out.findings, out.dead_letters = (stats.events, stats.messages, stats.findings,
                                                                stats.dead_letters)
    out.elapsed = finished - stats.first_time
    out.latencies = sorted(stats.latencies)
    return out


def _floor(args: argparse.Namespace) -> str:
    floors = f"floor {FLOOR_RATE['quiet']:,} quiet / {FLOOR_RATE['storm']:,} storm"
    if args.corpus:
        met = "meets" if args.result.events_per_s >= FLOOR_RATE[args.corpus] else "BELOW"
        floors += f": {met} the {args.corpus} floor"
    return floors


def report(args: argparse.Namespace, what: str, run: RunResult, paced: RunResult | None) -> None:
    args.result = run
    print(f"pipeline benchmark: {run.events:,} events, {what}; {run.rules:,} rules, {args.partitions} partitions, "
          f"{args.workers} evaluator processes, {args.batch} events/message, replay rate {run.rate}"
          f"{', envelopes' if args.envelopes else ', raw events'}")
    print(f"  end to end:   {run.events_per_s:,.0f} events/s ({_floor(args)}; {run.events:,} events in "
          f"{run.elapsed:.2f}s from the first event's arrival in JetStream to the last ack)")
    print(f"  findings:     {run.findings / max(run.events, 1):.4f} per event ({run.findings:,} findings; quiet "
          f"<= 0.01, storm >= 0.5); dead letters {run.dead_letters:,}; archived events (FINAL) {run.archived:,}")
    print(f"  replay:       {run.events / run.replay_seconds:,.0f} events/s published")
    _latency_line("latency:     ", run)
    if paced is not None:
        _latency_line(f"at {args.latency_at:.0%}:      ", paced)
        verdict = "meets" if _percentile(paced.latencies, 0.99) < FLOOR_P99 else "ABOVE"
        print(f"                p99 {_percentile(paced.latencies, 0.99) * 1000:,.0f} ms at "
              f"{paced.events_per_s:,.0f} events/s ({paced.rate}/s paced): floor {FLOOR_P99 * 1000:,.0f} ms, {verdict}")
    for label, r in [("", run)] + ([(f" (at {args.latency_at:.0%})", paced)] if paced is not None else []):
        pipeline_cpu = sum(r.cpu[name] for name in r.cpu if name != "PostgreSQL")
        per_event = {name: seconds / r.events * 1e6 for name, seconds in r.cpu.items()}
        print(f"  CPU{label}:  {pipeline_cpu:.1f} core-s (engine + evaluators + nats-server + replay) = "
              f"{pipeline_cpu / r.events * 1e6:.0f} us per event, i.e. {2 * r.events / pipeline_cpu:,.0f} events/s "
              f"on 2 idle cores; PostgreSQL {r.cpu['PostgreSQL']:.1f} core-s more")
        print("    us/event:   " + ", ".join(f"{name} {us:.1f}" for name, us in per_event.items()))
        print("    peak RSS:   " + ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in r.peaks.items()))


def _latency_line(label: str, run: RunResult) -> None:
    lat = run.latencies
    print(f"  {label} p50 {_percentile(lat, 0.50) * 1000:,.0f} ms, p99 {_percentile(lat, 0.99) * 1000:,.0f} ms "
          f"(per message, JetStream arrival -> ack after all sinks; {len(lat):,} messages)")


async def _main(args: argparse.Namespace, work: Path) -> None:
    events_file = work / "events.jsonl"
    with open(work / "engine.log", "a") as log:  # JSON lines at INFO, a line per finding, as `opmas up` logs
        setup_logging("INFO", log)
        await _runs(args, work, events_file)


async def _runs(args: argparse.Namespace, work: Path, events_file: Path) -> None:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        what = await asyncio.wrap_future(pool.submit(write_events, args, events_file))
    if args.sigma:
        rules_dir = Path(args.sigma).resolve()
    else:
        rules_dir = work / "rules"
        rules_dir.mkdir()
        for source in bench_rules(args.rules):
            (rules_dir / source.name).write_text(source.text)
    (work / "max").mkdir()
    run = await run_once(args, work / "max", events_file, rules_dir, args.rate)
    paced = None
    if args.latency_at:
        (work / "paced").mkdir()
        rate = str(round(run.events_per_s * args.latency_at))
        paced = await run_once(args, work / "paced", events_file, rules_dir, rate)
    report(args, what, run, paced)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rules", type=int, default=100, help="generated bench rules (without --sigma)")
    parser.add_argument("--kind", default="windows", help="event kind of benchmarks.generate (without --sigma)")
    parser.add_argument("--sigma", metavar="DIR", help="load the rules from DIR (e.g. SigmaHQ rules/windows) and "
                        "replay a --corpus built from them")
    parser.add_argument("--corpus", choices=sorted(CORPUS_SHARE), help="with --sigma: quiet (0.5%% of events give a "
                        "finding) or storm (60%%); default quiet")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="evaluator processes (0: in the engine process)")
    parser.add_argument("--batch", type=int, default=100, help="events per NATS message")
    parser.add_argument("--envelopes", action="store_true",
                        help="wrap events in envelopes with ids (agent SDK style) instead of raw events")
    parser.add_argument("--rate", default="max", help="replay rate in events/s (latency below saturation), or max")
    parser.add_argument("--latency-at", type=float, metavar="SHARE",
                        help="then run again paced at SHARE (e.g. 0.8) of the measured rate; print that p99")
    args = parser.parse_args(argv)
    if args.corpus and not args.sigma:
        parser.error("--corpus needs --sigma DIR (its events are built from those rules)")
    if args.sigma:
        args.corpus = args.corpus or "quiet"
        if not Path(args.sigma).is_dir():
            parser.error(f"--sigma {args.sigma}: not a directory")
    with tempfile.TemporaryDirectory(prefix="opmas-bench-") as work:
        asyncio.run(_main(args, Path(work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
