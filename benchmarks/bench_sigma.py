"""The engine on the real SigmaHQ rules: start-up, offline detection and the engine alone, each next to its floor.

Rules: SigmaHQ's ``rules/windows`` (about 2,400 rules over every Windows logsource) from the
snapshot in ``../shared/sigma``; start-up is also measured on every rule of the snapshot
(3,000+). Events (benchmarks/sigma_corpus.py): EVTX-JSON over 16 kinds of Windows event, a
quiet stream (0.5% of its events built to match a rule) and a storm (60%); the events built
from the rules are kept only where the engine confirms they give a finding.

Figures:
* start-up: ``load_ruleset`` on a cold and on a warm compiled-rule cache (a fresh temporary
  cache directory), in a child process each, wall clock;
* ``opmas detect`` (a child process, as a user runs it, one core) over each stream written as
  JSON lines: events/s as it prints them (after the rules are loaded), and its peak RSS over
  N and 2N events (bounded memory: the same at both sizes);
* ``Processor.process`` on parsed events (one core, CPU time), as the connectors hand them over: the
  object with the JSON text it was parsed from;
* candidate rules fully evaluated per event after the prefilter, and the finding rate.

End to end (``opmas up``'s pipeline on the embedded servers) is ``benchmarks/bench_pipeline.py
--sigma DIR --corpus quiet|storm``; ``--end-to-end`` runs it after these figures.

    python -m benchmarks.bench_sigma [--sigma ../shared/sigma] [--events 100000] [--end-to-end]
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.memory import peak_rss_mib
from benchmarks.sigma_corpus import rule_documents, rule_events, storm_events
from opmas.core.event import Event
from opmas.core.envelope import event_from_obj
from opmas.core.processor import Processor
from opmas.core.ruleset import RuleSet, load_ruleset, sources_from_paths
from opmas.runtime.gc_tuning import tune_gc_for_rules

CLOCK = time.process_time
QUIET_SHARE, STORM_SHARE = 0.005, 0.6
FLOORS = {"detect quiet": 60_000, "detect storm": 40_000, "process quiet": 150_000, "startup": 2.0}
DEFAULT_SIGMA = Path(__file__).resolve().parent.parent.parent / "shared" / "sigma"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def matching_events(ruleset: RuleSet, rules_dir: Path) -> list[dict[str, Any]]:
    """The events built from the rules of ``rules_dir`` that give a finding on their own."""
    processor = Processor(ruleset)
    return [obj for obj in rule_events(rule_documents(rules_dir)) if processor.process([event_from_obj(obj)]).findings]


def _load_in_child(paths: list[Path], cache: Path) -> tuple[float, int]:
    """Seconds ``load_ruleset`` takes in a fresh process with ``cache`` as its cache dir, and the rule count."""
    code = ("import sys,time\nfrom opmas.core.ruleset import load_ruleset, sources_from_paths\n"
            "sources = sources_from_paths(sys.argv[1:])\nt = time.perf_counter()\n"
            "ruleset, _ = load_ruleset(sources)\nprint(time.perf_counter() - t, len(ruleset.rules))\n")
    env = {**os.environ, "OPMAS_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def _detect(rules: Path, events: Path, cache: Path) -> tuple[float, int, int, float]:
    """``opmas detect`` as a child process: its events/s, events, findings and peak RSS (MiB).

    The peak is the child's own VmHWM, read while it runs: its rusage maximum would also count this
    (large) benchmark process's pages, which a child holds between fork and exec."""
    env = {**os.environ, "OPMAS_CACHE_DIR": str(cache)}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "opmas.cli", "detect", str(rules), "--events", str(events),
                                 "--output", os.devnull], env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, peak_rss_mib(proc.pid))  # nan (ignored by max) once it is gone
            time.sleep(0.05)
        err.seek(0)
        text = err.read().decode()
    summary = re.search(r"(\d+) events, (\d+) findings, .* ([\d,]+) events/s", text)
    if proc.returncode or summary is None:
        raise SystemExit(f"opmas detect failed ({proc.returncode}): {text[-2000:]}")
    return float(summary[3].replace(",", "")), int(summary[1]), int(summary[2]), peak


def _engine_only(ruleset: RuleSet, events: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    """Best events/s of ``Processor.process`` on parsed events, and candidate rules evaluated per event."""
    lines = [orjson.dumps(obj) for obj in events]  # parsed as the file and NATS connectors parse them
    batches = [[event_from_obj(orjson.loads(line), line) for line in lines[i:i + 1000]]
               for i in range(0, len(lines), 1000)]
    gc.freeze()  # parsed events are input, not engine work
    best = float("inf")
    for _ in range(repeat):
        processor = Processor(ruleset)
        processor.process(batches[0])  # groups built before timing
        started = CLOCK()
        for batch in batches:
            processor.process(batch)
        best = min(best, CLOCK() - started)
    gc.unfreeze()
    return len(events) / best, _evaluations(processor, [e for b in batches for e in b])


def _evaluations(processor: Processor, events: list[Event]) -> float:
    """Candidate rules the prefilters leave per event (each is then fully evaluated)."""
    index, total = processor.index, 0
    for event in events:
        view = index.view(event.data, event.raw)
        if view is not None:
            total += sum(len(lens.prefilter.candidates(view.scanned, view.haystack)) for lens in view.group.lenses)
    return total / len(events)


def _breakdown(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, float]:
    """CPU microseconds per event of each step, the best of three passes: parsing the JSON line
    (orjson), reading the fields the prefilters scan (``RuleIndex.view``), the prefilters
    (candidates of every lens, keyword text included) and everything else ``Processor.process``
    does (evaluating the candidates, building findings)."""
    lines = [orjson.dumps(obj) for obj in events]
    processor = Processor(ruleset)
    parsed = [event_from_obj(orjson.loads(line), line) for line in lines]
    processor.process(parsed[:1000])  # groups built before timing
    index = processor.index

    def best(step: Any) -> float:
        return min(step() for _ in range(3)) / len(lines) * 1e6

    def parse() -> float:
        started = CLOCK()
        for line in lines:
            orjson.loads(line)
        return CLOCK() - started

    def view() -> float:
        started = CLOCK()
        for event in parsed:
            index.view(event.data, event.raw)
        return CLOCK() - started

    def prefilter() -> float:
        views = [index.view(event.data, event.raw) for event in parsed]
        started = CLOCK()
        for v in views:
            for lens in v.group.lenses:
                lens.prefilter.candidates(v.scanned, v.haystack)
        return CLOCK() - started

    def process() -> float:
        started = CLOCK()
        for i in range(0, len(parsed), 1000):
            processor.process(parsed[i:i + 1000])
        return CLOCK() - started

    steps = {"parse": best(parse), "view": best(view), "prefilter": best(prefilter)}
    steps["evaluation"] = max(0.0, best(process) - steps["view"] - steps["prefilter"])
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigma", type=Path, default=DEFAULT_SIGMA, help="the SigmaHQ snapshot (default ../shared/sigma)")
    parser.add_argument("--events", type=int, default=100_000, help="events per stream (detect also runs 2x)")
    parser.add_argument("--repeat", type=int, default=3, help="passes of the engine-only figure; the best is printed")
    parser.add_argument("--end-to-end", action="store_true", help="then run bench_pipeline on the quiet stream and the storm")
    args = parser.parse_args(argv)
    windows = args.sigma / "rules" / "windows"
    if not windows.is_dir():
        raise SystemExit(f"no SigmaHQ snapshot at {args.sigma} (--sigma)")
    everything = sorted(p for p in args.sigma.iterdir() if p.is_dir() and p.name.startswith("rules"))
    with tempfile.TemporaryDirectory(prefix="opmas-bench-sigma-") as tmp:
        work = Path(tmp)
        cold, count = _load_in_child([windows], work / "cache-windows")
        warm, _ = _load_in_child([windows], work / "cache-windows")
        all_cold, all_count = _load_in_child(everything, work / "cache-all")
        all_warm, _ = _load_in_child(everything, work / "cache-all")
        print(f"start-up (load_ruleset, wall clock, fresh process): rules/windows {count:,} rules: cold cache "
              f"{cold:.2f}s, warm {warm:.2f}s; whole snapshot {all_count:,} rules: cold {all_cold:.2f}s, "
              f"warm {all_warm:.2f}s   floor: 3,000+ rules < {FLOORS['startup']:.0f}s -> "
              f"{_verdict(all_count >= 3000 and all_warm < FLOORS['startup'])}")

        ruleset, _ = load_ruleset(sources_from_paths([windows]), cache_dir=work / "cache-windows")
        matching = matching_events(ruleset, windows)
        tune_gc_for_rules()
        print(f"events: EVTX-JSON, 16 kinds of Windows event; {len(matching):,} events built from the rules give a "
              f"finding; quiet stream {QUIET_SHARE:.1%} of them, storm {STORM_SHARE:.0%}")
        for name, share in (("quiet", QUIET_SHARE), ("storm", STORM_SHARE)):
            events = list(storm_events(2 * args.events, matching, share))
            files = {}
            for size in (args.events, 2 * args.events):
                files[size] = work / f"{name}-{size}.jsonl"
                with open(files[size], "wb") as out:
                    out.writelines(orjson.dumps(obj) + b"\n" for obj in events[:size])
            rate, n, findings, rss = _detect(windows, files[args.events], work / "cache-windows")
            _, _, _, rss2 = _detect(windows, files[2 * args.events], work / "cache-windows")
            floor = FLOORS[f"detect {name}"]
            print(f"\n{name}: {findings / n:.2%} of events give a finding ({findings:,} findings, {n:,} events)")
            print(f"  opmas detect:       {rate:>9,.0f} events/s   floor {floor:,} -> {_verdict(rate >= floor)}; "
                  f"peak RSS {rss:,.0f} MiB ({args.events:,} events), {rss2:,.0f} MiB ({2 * args.events:,})")
            sample = events[: min(len(events), 50_000)]
            engine_rate, evaluated = _engine_only(ruleset, sample, args.repeat)
            verdict = f"floor {FLOORS['process quiet']:,} -> {_verdict(engine_rate >= FLOORS['process quiet'])}" \
                if name == "quiet" else "(no floor)"
            print(f"  Processor.process:  {engine_rate:>9,.0f} events/s   {verdict}; "
                  f"{evaluated:.2f} candidate rules evaluated per event after the prefilter")
            steps = _breakdown(ruleset, sample[:20_000])
            budget = 1e6 / (FLOORS["process quiet"] if name == "quiet" else FLOORS[f"detect {name}"])
            print("  CPU per event:      " + ", ".join(f"{step} {us:.1f} us" for step, us in steps.items())
                  + f"   (the floor's budget: {budget:.1f} us per event"
                  + (" for the engine alone)" if name == "quiet" else " for parse, engine and output)"))
            del events, sample
    if args.end_to_end:
        for corpus in ("quiet", "storm"):
            print(f"\nend to end, {corpus}:", flush=True)
            subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", "--sigma", str(windows),
                            "--corpus", corpus, "--latency-at", "0.8"], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
