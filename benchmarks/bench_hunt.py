"""Retro-hunt throughput over an archive (issue 14): events/s over the hunted range, for one selective
SigmaHQ rule and for SigmaHQ's whole ``rules/windows``, with how many rows ClickHouse's prefilter let
through to the engine.

The archive is an embedded chdb one in a temporary folder, filled with the quiet EVTX-JSON stream
of benchmarks/sigma_corpus.py (0.5% of its events built from the rules to match); the hunt reads it
the way ``opmas hunt`` does (opmas/hunt.py). Wall clock, one process.

    python -m benchmarks.bench_hunt [--events 1000000] [--sigma ../shared/sigma]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.bench_sigma import DEFAULT_SIGMA, QUIET_SHARE, matching_events
from benchmarks.memory import peak_rss_mib
from benchmarks.sigma_corpus import storm_events
from opmas.connectors.clickhouse.archive import Archive, connect, encode_row
from opmas.core.ruleset import RuleSet, load_ruleset, sources_from_paths
from opmas.runtime.hunt import HuntStats, hunt

SELECTIVE = "rules/windows/process_creation/proc_creation_win_whoami_all_execution.yml"
START = 1_790_000_000.0
BLOCK = 50_000


def fill(archive: Archive, ruleset: RuleSet, windows: Path, count: int) -> float:
    """Archive ``count`` quiet-stream events, one per millisecond from START; returns the seconds it took."""
    matching = matching_events(ruleset, windows)
    started = time.perf_counter()
    rows: list[bytes] = []
    for i, obj in enumerate(storm_events(count, matching, QUIET_SHARE)):
        rows.append(encode_row(f"b{i:08d}", START + i / 1000, f"host-{i % 16}", "evtx", orjson.dumps(obj), i))
        if len(rows) >= BLOCK:
            archive.insert_block(b"".join(rows))
            rows = []
    if rows:
        archive.insert_block(b"".join(rows))
    return time.perf_counter() - started


def run(archive: Archive, ruleset: RuleSet, count: int, name: str) -> None:
    stats = HuntStats()
    started = time.perf_counter()
    for _ in hunt(archive, ruleset, START, START + count, stats=stats):
        pass
    seconds = time.perf_counter() - started
    print(f"  {name:<28} {stats.in_range / seconds:>9,.0f} events/s over the range ({stats.in_range:,} events in "
          f"{seconds:.1f}s); {stats.read:,} read by the engine after ClickHouse's prefilter; "
          f"{stats.findings:,} findings")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigma", type=Path, default=DEFAULT_SIGMA, help="the SigmaHQ snapshot")
    parser.add_argument("--events", type=int, default=1_000_000, help="archived events")
    args = parser.parse_args(argv)
    windows = args.sigma / "rules" / "windows"
    if not windows.is_dir():
        raise SystemExit(f"no SigmaHQ snapshot at {args.sigma} (--sigma)")
    broad, _ = load_ruleset(sources_from_paths([windows]))
    selective, _ = load_ruleset(sources_from_paths([args.sigma / SELECTIVE]))
    with tempfile.TemporaryDirectory(prefix="opmas-bench-hunt-") as tmp:
        archive = Archive(connect(None, Path(tmp) / "clickhouse"))
        archive.ensure_table()
        filled = fill(archive, broad, windows, args.events)
        print(f"archive: {args.events:,} EVTX-JSON events (quiet stream) written in {filled:.1f}s")
        run(archive, selective, args.events, "one selective rule (whoami)")
        run(archive, broad, args.events, f"rules/windows ({len(broad.rules):,})")
        archive.close()
    print(f"peak RSS {peak_rss_mib(os.getpid()):,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
