"""Rule engine benchmark: events/s, per-rule cost and peak memory for 100 and 1,000+ rules.

Events: EVTX-JSON process creation (Sysmon 1 + Security 4688) from benchmarks.generate,
held as JSON lines in memory; the measured loop includes JSON parsing (orjson), event
construction (ids), logsource dispatch, prefilter and rule evaluation, on one core, with the
garbage collector tuned as ``opmas detect`` and the runtime workers tune it once the rule set is
loaded (opmas/gc_tuning.py: the rule set frozen, young collections less often).
Rules: variations of SigmaHQ-style process_creation rules (Image|endswith,
CommandLine|contains|all, ParentImage + 1 of selection_*, regexes, windash,
base64offset, OriginalFileName lists, filters).

    python -m benchmarks.bench_rules [--events 100000] [--rules 100 1000 2000] [--top 10] [--repeat 3]
"""
from __future__ import annotations

import argparse
import gc
import random
import re
import resource
import time
import tracemalloc
from collections import Counter
from typing import Any

import orjson

from benchmarks.generate import generate
from opmas.core.envelope import event_from_obj
from opmas.core.processor import Processor
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset
from opmas.runtime.gc_tuning import tune_gc_for_rules

# CPU time of this (single-threaded) process: on a shared host, time spent waiting for the
# core while other processes run is not counted, so figures are per core actually used.
CLOCK = time.process_time

BINARIES = """
whoami net net1 reg schtasks at wmic mshta rundll32 regsvr32 certutil bitsadmin cscript wscript msiexec
installutil regasm regsvcs msbuild csc vbc cmstp control odbcconf pcalua forfiles bash wsl hh infdefaultinstall
ieexec mavinject msconfig msdt presentationhost register-cimprovider rpcping scriptrunner syncappvpublishingserver
verclsid wab xwizard atbroker bginfo cdb dnscmd dxcap esentutl expand extexport extrac32 findstr ftp gpscript
ie4uinit makecab mmc msdeploy ntdsutil pktmon print psr replace rasautou sc sdbinst settingsynchost stordiag
tttracer vsjitdebugger winrm wsreset xcopy adfind psexec procdump mimikatz rubeus sharphound bloodhound nltest
dsquery quser qwinsta tasklist taskkill vssadmin wevtutil bcdedit fsutil icacls takeown attrib cipher diskshadow
wbadmin auditpol netsh route arp ipconfig systeminfo hostname klist setspn cmdkey runas tscon mstsc
""".split()
FRAGMENTS = """
-enc -encodedcommand downloadstring downloadfile invoke-expression iex frombase64string -nop bypass
/transfer /urlcache -split -decode sekurlsa::logonpasswords lsadump::sam kerberos::golden privilege::debug
shadows resize shadowstorage /set {default} recoveryenabled clear-log add-mppreference
-exclusionpath set-mppreference disablerealtimemonitoring /sc onlogon /ru system /rl highest
/domain "domain admins" trust_dcs dclist: javascript: vbscript: \\\\127.0.0.1\\ admin$ c$ ipc$
.dll,dllregisterserver scrobj.dll /i:http comsvcs.dll minidump lsass.exe ntds.dit system.hive sam.hive
hklm\\sam hklm\\system binpath= advfirewall allprofiles portproxy
""".split()
PARENTS = ["winword.exe", "excel.exe", "powerpnt.exe", "outlook.exe", "mshta.exe", "wscript.exe", "cscript.exe",
           "w3wp.exe", "sqlservr.exe", "httpd.exe", "nginx.exe", "tomcat.exe", "java.exe", "wmiprvse.exe",
           "rundll32.exe", "regsvr32.exe", "msiexec.exe", "wmic.exe", "hh.exe"]


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rule(i: int, rng: random.Random) -> str:
    """One SigmaHQ-style process_creation rule (variation ``i``)."""
    kind = i % 8
    b1, b2, b3 = rng.sample(BINARIES, 3)
    f1, f2, f3 = rng.sample(FRAGMENTS, 3)
    p1, p2 = rng.sample(PARENTS, 2)
    head = (f"title: Bench rule {i} ({kind})\nid: bench-{i:05d}\nstatus: test\n"
            f"logsource:\n  category: process_creation\n  product: windows\n"
            f"level: {rng.choice(['low', 'medium', 'high', 'critical'])}\ntags: [attack.execution, attack.t1059]\n")
    if kind == 0:
        det = (f"  selection:\n    Image|endswith: {_q(chr(92) + b1 + '.exe')}\n"
               f"    CommandLine|contains: {_q(f1)}\n  condition: selection\n")
    elif kind == 1:
        det = (f"  selection:\n    CommandLine|contains|all:\n      - {_q(f1)}\n      - {_q(f2)}\n"
               f"  condition: selection\n")
    elif kind == 2:
        det = (f"  selection_parent:\n    ParentImage|endswith:\n      - {_q(chr(92) + p1)}\n      - {_q(chr(92) + p2)}\n"
               f"  selection_img:\n    - Image|endswith: {_q(chr(92) + b1 + '.exe')}\n"
               f"    - OriginalFileName: {_q(b1.upper() + '.EXE')}\n"
               f"  selection_cli:\n    CommandLine|contains: [{_q(f1)}, {_q(f2)}, {_q(f3)}]\n"
               f"  condition: selection_parent and 1 of selection_i* or selection_parent and selection_cli\n")
    elif kind == 3:
        switch = re.escape(rng.choice(FRAGMENTS).strip("-/")[:6])
        regex = f"(?i){b1}(\\.exe)?.*\\s+[-/]{switch}"
        det = f"  selection:\n    CommandLine|re: {_q(regex)}\n  condition: selection\n"
    elif kind == 4:
        det = (f"  selection:\n    Image|endswith:\n" + "".join(f"      - {_q(chr(92) + b + '.exe')}\n" for b in (b1, b2, b3))
               + f"    CommandLine|contains|windash: {_q(' -' + f1.lstrip('-/'))}\n"
               f"  filter_main:\n    ParentImage|startswith: 'C:\\Program Files\\'\n"
               f"  condition: selection and not 1 of filter_*\n")
    elif kind == 5:
        det = (f"  selection:\n    CommandLine|base64offset|contains: {_q(f1 + ' ' + f2)}\n  condition: selection\n")
    elif kind == 6:
        det = (f"  selection_img:\n    - Image|endswith: {_q(chr(92) + b1 + '.exe')}\n"
               f"    - OriginalFileName: {_q(b1 + '.exe')}\n"
               f"  selection_cli:\n    CommandLine|contains:\n      - {_q(f1)}\n      - {_q(f2)}\n"
               f"  filter_user:\n    User|contains: ['AUTHORI', 'AUTORI']\n"
               f"  condition: all of selection_* and not filter_user\n")
    else:
        det = (f"  selection:\n    ParentImage|endswith: {_q(chr(92) + p1)}\n"
               f"    Image|endswith: ['\\cmd.exe', '\\powershell.exe', {_q(chr(92) + b1 + '.exe')}]\n"
               f"    CommandLine|contains: {_q(f1)}\n  condition: selection\n")
    return head + "detection:\n" + det


# Rules the generated events do trigger, so findings are produced and measured too.
MATCHING = [
    ("whoami-all", "    Image|endswith: '\\whoami.exe'\n    CommandLine|contains: '/all'\n"),
    ("net-admins", "    CommandLine|contains|all: ['localgroup', 'administrators']\n"),
    ("ps-hidden", "    Image|endswith: '\\powershell.exe'\n    CommandLine|contains|windash: ' -w hidden'\n"),
    ("temp-exe", "    Image|contains: '\\AppData\\Local\\Temp\\'\n"),
    ("schtasks-create", "    Image|endswith: '\\schtasks.exe'\n    CommandLine|contains: '/create'\n"),
]


def bench_rules(count: int, seed: int = 7) -> list[RuleSource]:
    """``count`` rule sources: a few that match the generated events, the rest variations."""
    rng = random.Random(seed)
    sources = []
    for name, selection in MATCHING[: min(len(MATCHING), count)]:
        sources.append(RuleSource(f"{name}.yml", f"title: {name}\nid: {name}\nlevel: high\n"
                                  "logsource: {category: process_creation, product: windows}\n"
                                  f"detection:\n  selection:\n{selection}  condition: selection\n"))
    sources += [RuleSource(f"bench_{i}.yml", _rule(i, rng)) for i in range(count - len(sources))]
    return sources


def _engine_only(ruleset: RuleSet, lines: list[bytes], batch: int = 1000) -> float:
    """Seconds in Processor.process alone (events parsed and built beforehand)."""
    processor = Processor(ruleset)
    batches = [[event_from_obj(orjson.loads(line)) for line in lines[start:start + batch]]
               for start in range(0, len(lines), batch)]
    gc.freeze()  # the pre-parsed events are input, not work of the engine: keep the GC off them
    started = CLOCK()
    for events in batches:
        processor.process(events)
    elapsed = CLOCK() - started
    gc.unfreeze()  # let the batches go (the next freeze takes the rule set again)
    return elapsed


def _run(ruleset: RuleSet, lines: list[bytes], batch: int = 1000) -> tuple[float, int]:
    processor = Processor(ruleset)
    loads = orjson.loads
    findings = 0
    started = CLOCK()
    for start in range(0, len(lines), batch):
        events = [event_from_obj(loads(line)) for line in lines[start:start + batch]]
        findings += len(processor.process(events).findings)
    return CLOCK() - started, findings


def _rule_costs(ruleset: RuleSet, lines: list[bytes]) -> tuple[list[tuple[float, int, str]], float]:
    """Time spent in each rule's matcher (evaluations after the prefilter)."""
    spent: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    clock = time.perf_counter  # short intervals: cheap wall clock, preemption inside one is rare
    for rule in ruleset.detections:
        def timed(flat: dict[str, Any], low: dict[str, Any], _m: Any = rule.match, _id: str = rule.id) -> bool:
            t = clock()
            try:
                return _m(flat, low)
            finally:
                spent[_id] += clock() - t
                calls[_id] += 1
        rule.match = timed
    _run(ruleset, lines)
    candidates = sum(calls.values()) / len(lines)
    return sorted(((spent[k], calls[k], k) for k in spent), reverse=True), candidates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100000)
    parser.add_argument("--rules", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="passes per figure; the best is printed (noisy hosts)")
    args = parser.parse_args(argv)
    raw = list(generate("windows", args.events, args.seed))
    lines = [orjson.dumps(e) for e in raw]
    # as agents publish them: an envelope with the agent's event id and time
    enveloped = [orjson.dumps({"id": f"ev-{i}", "agent_id": "bench", "type": "evtx",
                               "timestamp": e["Event"]["System"]["TimeCreated"]["@SystemTime"], "data": e})
                 for i, e in enumerate(raw)]
    del raw  # keep only bytes: parsed objects would inflate the cyclic GC's work
    print(f"events: {len(lines):,} EVTX-JSON process creation (Sysmon 1 / Security 4688), "
          f"{sum(map(len, lines)) / len(lines):.0f} bytes avg; rates per second of CPU time on one core "
          f"(shared host: caches and frequency still vary); GC tuned as opmas detect tunes it (tune_gc_for_rules)")
    for count in args.rules:
        gc.unfreeze()
        gc.collect()
        tracemalloc.start()
        started = CLOCK()
        ruleset, errors = load_ruleset(bench_rules(count))
        load_s = CLOCK() - started
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        hard = [e for e in errors if e.severity == "error"]
        assert not hard, hard[:3]
        tune_gc_for_rules()  # as opmas detect and the workers do
        _run(ruleset, lines[:5000])  # warm the discriminator cache
        elapsed, findings = min(_run(ruleset, lines) for _ in range(args.repeat))
        enveloped_s = min(_run(ruleset, enveloped)[0] for _ in range(args.repeat))
        sample = lines[:20000]  # parsed events take memory: measure the engine alone on a sample
        engine_s = min(_engine_only(ruleset, sample) for _ in range(args.repeat))
        tracemalloc.start()
        _run(ruleset, lines[:20000])
        run_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"\n== {len(ruleset.detections)} rules: load {load_s:.2f}s (peak {load_peak / 2**20:.1f} MiB traced)")
        print(f"   {len(lines) / elapsed:,.0f} events/s ({elapsed * 1e6 / len(lines):.1f} us/event incl. JSON parse), "
              f"{findings:,} findings; peak while processing 20k events {run_peak / 2**20:.1f} MiB traced")
        print(f"   enveloped events (agent ids and times, no content hashing): {len(lines) / enveloped_s:,.0f} events/s; "
              f"engine only (Processor.process on parsed events): {len(sample) / engine_s:,.0f} events/s")
        costs, candidates = _rule_costs(ruleset, lines[:20000])
        print(f"   rules fully evaluated per event after prefilter: {candidates:.2f}; top {args.top} by time:")
        for spent, calls, rule_id in costs[: args.top]:
            print(f"     {rule_id:<16} {spent * 1e3:8.1f} ms  {calls:7,} evals  {spent / calls * 1e6:6.2f} us/eval")
    print(f"\nprocess max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
