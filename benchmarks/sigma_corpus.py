"""Windows EVTX-JSON events for the SigmaHQ benchmark: a quiet stream, and a storm derived from the rules.

* :func:`quiet_events`: everyday Windows telemetry over the logsources SigmaHQ's ``rules/windows``
  cover (Sysmon 1, 3, 5, 7, 10, 11, 13, 17, 22; Security 4624, 4672, 4688, 5156; PowerShell
  4104; System 7036; Defender 1150), benign values, deterministic for a seed.
* :func:`rule_events`: one event per rule that the rule itself matches, built from the rule's own
  selections (the first value of each list, wildcards filled in, ``contains|all`` joined) on top of a
  quiet event of the rule's logsource. Rules whose selections cannot be satisfied this way (regexes,
  encodings, conflicting values) give no event; :func:`storm_events` keeps only events that the
  engine confirms give a finding.
* :func:`storm_events`: quiet events with a share of rule events mixed in.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

SYSMON = "Microsoft-Windows-Sysmon/Operational"
POWERSHELL = "Microsoft-Windows-PowerShell/Operational"
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
S32 = "C:\\Windows\\System32\\"
HOSTS = ["WS-0101", "WS-0102", "WS-0217", "WS-0342", "SRV-FILE02", "SRV-APP07"]
USERS = ["alice", "bob", "carol", "dave", "erin", "svc_backup"]

# (image, arguments): everyday process creation
PROGRAMS = [
    (S32 + "svchost.exe", ["-k netsvcs -p -s Schedule", "-k LocalService -p -s EventSystem", "-k DcomLaunch -p"]),
    (S32 + "SearchProtocolHost.exe", ["Global\\UsGthrFltPipeMssGthrPipe7_ Global\\UsGthrCtrlFltPipeMssGthrPipe7 1"]),
    (S32 + "taskhostw.exe", [""]),
    (S32 + "backgroundTaskHost.exe", ["-ServerName:BackgroundTaskHost.WebAccountProvider"]),
    (S32 + "RuntimeBroker.exe", ["-Embedding"]),
    (S32 + "dllhost.exe", ["/Processid:{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}"]),
    (S32 + "smartscreen.exe", ["-Embedding"]),
    ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     ["--type=renderer --field-trial-handle=1988,i,5521 --lang=en-US", "--type=gpu-process --gpu-preferences=UAAAAAAA"]),
    ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe",
     ["--type=utility --utility-sub-type=network.mojom.NetworkService --lang=en-US"]),
    ("C:\\Program Files\\Microsoft VS Code\\Code.exe", ["--type=renderer --vscode-window-config=vscode:14"]),
    ("C:\\Program Files\\Git\\cmd\\git.exe", ["status", "fetch origin", "log --oneline -n 20"]),
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", ["/recycle"]),
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE", ["C:\\Users\\{user}\\Documents\\budget.xlsx"]),
    ("C:\\Program Files\\Notepad++\\notepad++.exe", ["C:\\Users\\{user}\\Documents\\notes.txt"]),
    ("C:\\Program Files\\7-Zip\\7zFM.exe", [""]),
    ("C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe", ["--system-initiated"]),
    ("C:\\Program Files\\Mozilla Firefox\\firefox.exe", ["-contentproc --channel=1744 -childID 3 tab"]),
]
SYSTEM_PARENTS = [S32 + "services.exe", S32 + "svchost.exe", S32 + "wininit.exe"]  # of System32 programs; others start from explorer
USER_PARENT = "C:\\Windows\\explorer.exe"
BROWSERS = [p for p in PROGRAMS if p[0].endswith(("chrome.exe", "msedge.exe", "firefox.exe"))]
DLLS = ["ntdll.dll", "kernel32.dll", "KernelBase.dll", "user32.dll", "advapi32.dll", "combase.dll", "msvcrt.dll",
        "ole32.dll", "shell32.dll", "ws2_32.dll", "crypt32.dll", "bcrypt.dll", "sechost.dll", "rpcrt4.dll"]
DOMAINS = ["www.example.com", "outlook.office365.com", "login.microsoftonline.com", "update.googleapis.com",
           "github.com", "teams.microsoft.com", "ctldl.windowsupdate.com", "intranet.corp.example"]
REG_KEYS = ["HKU\\S-1-5-21-1004\\Software\\Microsoft\\Office\\16.0\\Common\\Roaming\\Identities\\Count",
            "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\LastOnlineScanTimeForAppCategory",
            "HKU\\S-1-5-21-1004\\Software\\Google\\Chrome\\PreferenceMACs\\Default\\homepage",
            "HKLM\\SYSTEM\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\S-1-5-21-1004\\Device\\Teams.exe"]
FILES = ["C:\\Users\\{user}\\Documents\\report-{n}.docx", "C:\\Users\\{user}\\Downloads\\invoice-{n}.pdf",
         "C:\\Users\\{user}\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\Cache\\f_{n:06x}",
         "C:\\ProgramData\\Microsoft\\Windows Defender\\Scans\\History\\CacheManager\\{n}.bin"]
SCRIPTS = ["Get-Service | Where-Object {$_.Status -eq 'Running'} | Select-Object Name",
           "Import-Module Microsoft.PowerShell.Management; Get-ChildItem C:\\Users\\{user}\\Documents",
           "$ErrorActionPreference = 'Stop'; Test-Path C:\\Temp\\build.log",
           "Get-Date -Format o | Out-File C:\\Users\\{user}\\last-run.txt"]
SERVICES = ["Windows Update", "Background Intelligent Transfer Service", "Print Spooler", "Windows Search"]

# Sysmon 1 (process creation) .. System 7036: weights as in ordinary endpoint telemetry
KINDS = ["process", "network", "terminate", "image", "access", "file", "registry", "pipe", "dns",
         "logon", "privileges", "proc4688", "wfp", "script", "service", "defender"]
WEIGHTS = [12, 12, 6, 22, 3, 10, 12, 2, 6, 4, 1, 2, 2, 2, 1, 1]


def _guid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return "{" + f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".upper() + "}"


def _system(rng: random.Random, i: int, channel: str, event_id: int, provider: str, when: datetime) -> dict[str, Any]:
    return {
        "Provider": {"@Name": provider, "@Guid": _guid(rng)},
        "EventID": event_id, "Version": 5, "Level": 4, "Task": 1, "Opcode": 0, "Keywords": "0x8000000000000000",
        "TimeCreated": {"@SystemTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        "EventRecordID": 100000 + i, "Correlation": None,
        "Execution": {"@ProcessID": 3012, "@ThreadID": 4100}, "Channel": channel,
        "Computer": f"{rng.choice(HOSTS)}.corp.example", "Security": {"@UserID": "S-1-5-18"},
    }


def _image(rng: random.Random, user: str, programs: list[tuple[str, list[str]]] = PROGRAMS) -> tuple[str, str]:
    image, args = rng.choice(programs)
    image = image.replace("{user}", user)
    arg = rng.choice(args).replace("{user}", user)
    return image, (f'"{image}" {arg}'.strip())


def quiet_event(rng: random.Random, i: int, kind: str | None = None) -> dict[str, Any]:
    """One benign Windows event as EVTX-JSON (``kind``: one of KINDS, default drawn by weight)."""
    kind = kind or rng.choices(KINDS, WEIGHTS)[0]
    when = START + timedelta(milliseconds=i * 5 + rng.randrange(5))
    user = rng.choice(USERS)
    image, command_line = _image(rng, user, BROWSERS if kind == "network" else PROGRAMS)
    parent = USER_PARENT if not image.startswith(S32) else \
        S32 + "services.exe" if image.endswith("svchost.exe") else rng.choice(SYSTEM_PARENTS)
    utc = when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    guid, pid = _guid(rng), rng.randrange(400, 40000)
    common = {"RuleName": "-", "UtcTime": utc, "ProcessGuid": guid, "ProcessId": pid, "Image": image}
    sysmon_ids = {"process": 1, "network": 3, "terminate": 5, "image": 7, "access": 10, "file": 11,
                  "registry": 13, "pipe": 17, "dns": 22}
    if kind in sysmon_ids:
        system = _system(rng, i, SYSMON, sysmon_ids[kind], "Microsoft-Windows-Sysmon", when)
        if kind == "process":
            name = image.rsplit("\\", 1)[-1]
            data = {**common, "FileVersion": "10.0.19041.1", "Description": name, "Product": "Microsoft Windows",
                    "Company": "Microsoft Corporation", "OriginalFileName": name, "CommandLine": command_line,
                    "CurrentDirectory": f"C:\\Users\\{user}\\", "User": f"CORP\\{user}", "LogonGuid": _guid(rng),
                    "LogonId": f"0x{rng.getrandbits(24):x}", "TerminalSessionId": 1,
                    "IntegrityLevel": rng.choice(["Medium", "High"]),
                    "Hashes": f"SHA256={rng.getrandbits(256):064X}", "ParentProcessGuid": _guid(rng),
                    "ParentProcessId": rng.randrange(400, 40000), "ParentImage": parent,
                    "ParentCommandLine": parent.rsplit("\\", 1)[-1], "ParentUser": f"CORP\\{user}"}
        elif kind == "network":
            data = {**common, "User": f"CORP\\{user}", "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false",
                    "SourceIp": f"10.1.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    "SourceHostname": "-", "SourcePort": rng.randrange(49152, 65535), "SourcePortName": "-",
                    "DestinationIsIpv6": "false", "DestinationIp": f"52.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    "DestinationHostname": rng.choice(DOMAINS), "DestinationPort": rng.choice([443, 443, 443, 80]),
                    "DestinationPortName": "https"}
        elif kind == "terminate":
            data = {**common, "User": f"CORP\\{user}"}
        elif kind == "image":
            dll = rng.choice(DLLS)
            data = {**common, "ImageLoaded": S32 + dll, "FileVersion": "10.0.19041.3636", "Description": dll,
                    "Product": "Microsoft Windows", "Company": "Microsoft Corporation", "OriginalFileName": dll,
                    "Hashes": f"SHA256={rng.getrandbits(256):064X}", "Signed": "true",
                    "Signature": "Microsoft Windows", "SignatureStatus": "Valid", "User": f"CORP\\{user}"}
        elif kind == "access":
            data = {"RuleName": "-", "UtcTime": utc, "SourceProcessGUID": guid, "SourceProcessId": pid,
                    "SourceThreadId": rng.randrange(100, 9000), "SourceImage": image,
                    "TargetProcessGUID": _guid(rng), "TargetProcessId": rng.randrange(400, 40000),
                    "TargetImage": S32 + rng.choice(["svchost.exe", "RuntimeBroker.exe", "dllhost.exe"]),
                    "GrantedAccess": "0x1000", "CallTrace": S32 + "ntdll.dll+9d4c4|" + S32 + "KERNELBASE.dll+2c13e",
                    "SourceUser": f"CORP\\{user}", "TargetUser": f"CORP\\{user}"}
        elif kind == "file":
            target = rng.choice(FILES).format(user=user, n=rng.randrange(1 << 20))
            data = {**common, "TargetFilename": target, "CreationUtcTime": utc, "User": f"CORP\\{user}"}
        elif kind == "registry":
            data = {**common, "EventType": "SetValue", "TargetObject": rng.choice(REG_KEYS),
                    "Details": f"DWORD (0x{rng.randrange(1 << 16):08x})", "User": f"CORP\\{user}"}
        elif kind == "pipe":
            data = {**common, "EventType": "CreatePipe", "PipeName": f"\\mojo.{pid}.{rng.getrandbits(64)}",
                    "User": f"CORP\\{user}"}
        else:
            data = {**common, "QueryName": rng.choice(DOMAINS), "QueryStatus": "0",
                    "QueryResults": f"::ffff:52.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)};",
                    "User": f"CORP\\{user}"}
        return {"Event": {"System": system, "EventData": data}}
    if kind in ("logon", "privileges", "proc4688", "wfp"):
        event_id = {"logon": 4624, "privileges": 4672, "proc4688": 4688, "wfp": 5156}[kind]
        system = _system(rng, i, "Security", event_id, "Microsoft-Windows-Security-Auditing", when)
        system["Security"] = None
        subject = {"SubjectUserSid": "S-1-5-18", "SubjectUserName": f"{rng.choice(HOSTS)}$",
                   "SubjectDomainName": "CORP", "SubjectLogonId": "0x3e7"}
        if kind == "logon":
            data = {**subject, "TargetUserSid": "S-1-5-21-1004", "TargetUserName": user, "TargetDomainName": "CORP",
                    "TargetLogonId": f"0x{rng.getrandbits(24):x}", "LogonType": rng.choice([2, 3, 5, 7]),
                    "LogonProcessName": "User32", "AuthenticationPackageName": "Negotiate",
                    "WorkstationName": rng.choice(HOSTS), "LogonGuid": _guid(rng), "TransmittedServices": "-",
                    "LmPackageName": "-", "KeyLength": 0, "ProcessId": "0x2f4", "ProcessName": S32 + "svchost.exe",
                    "IpAddress": f"10.1.{rng.randrange(256)}.{rng.randrange(1, 255)}", "IpPort": "0",
                    "ImpersonationLevel": "%%1833", "ElevatedToken": "%%1842"}
        elif kind == "privileges":
            data = {**subject, "PrivilegeList": "SeAssignPrimaryTokenPrivilege\n\t\t\tSeTcbPrivilege"}
        elif kind == "proc4688":
            data = {**subject, "NewProcessId": hex(pid), "NewProcessName": image, "TokenElevationType": "%%1936",
                    "ProcessId": hex(rng.randrange(400, 40000)), "CommandLine": command_line,
                    "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-",
                    "TargetLogonId": "0x0", "ParentProcessName": parent, "MandatoryLabel": "S-1-16-8192"}
        else:
            data = {"ProcessID": pid, "Application": "\\device\\harddiskvolume3\\program files\\google\\chrome\\application\\chrome.exe",
                    "Direction": "%%14593", "SourceAddress": f"10.1.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    "SourcePort": rng.randrange(49152, 65535), "DestAddress": f"52.{rng.randrange(256)}.1.{rng.randrange(1, 255)}",
                    "DestPort": 443, "Protocol": 6, "FilterRTID": 70011, "LayerName": "%%14611", "LayerRTID": 48}
        return {"Event": {"System": system, "EventData": data}}
    if kind == "script":
        system = _system(rng, i, POWERSHELL, 4104, "Microsoft-Windows-PowerShell", when)
        data = {"MessageNumber": 1, "MessageTotal": 1, "ScriptBlockText": rng.choice(SCRIPTS).replace("{user}", user),
                "ScriptBlockId": _guid(rng)[1:-1].lower(), "Path": ""}
        return {"Event": {"System": system, "EventData": data}}
    if kind == "service":
        system = _system(rng, i, "System", 7036, "Service Control Manager", when)
        data = {"param1": rng.choice(SERVICES), "param2": rng.choice(["running", "stopped"])}
        return {"Event": {"System": system, "EventData": data}}
    system = _system(rng, i, "Microsoft-Windows-Windows Defender/Operational", 1150, "Microsoft-Windows-Windows Defender", when)
    data = {"Product Name": "Microsoft Defender Antivirus", "Product Version": "4.18.23110.3",
            "Platform version": "4.18.23110.3", "Engine version": "1.1.23110.2", "Signature version": "1.403.1234.0"}
    return {"Event": {"System": system, "EventData": data}}


def quiet_events(count: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``count`` benign Windows events, deterministic for ``seed``."""
    rng = random.Random(seed)
    for i in range(count):
        yield quiet_event(rng, i)


# --- events derived from rules -----------------------------------------------------

# the quiet kind whose System and other fields a rule event starts from, by logsource category
CATEGORY_KINDS = {"process_creation": "process", "network_connection": "network", "process_termination": "terminate",
                  "image_load": "image", "process_access": "access", "file_event": "file", "registry_set": "registry",
                  "registry_event": "registry", "registry_add": "registry", "registry_delete": "registry",
                  "pipe_created": "pipe", "dns_query": "dns", "ps_script": "script"}


def _channel_and_id(logsource: dict[str, str], mapping: list[dict[str, Any]]) -> tuple[str, int | None] | None:
    """The (Channel, EventID) of the first windows.yml entry covering the rule's logsource."""
    for entry in mapping:
        if all(entry.get(key) == value for key, value in logsource.items() if key != "product"):
            when = entry.get("when") or {}
            channel, event_id = when.get("Channel"), when.get("EventID")
            channel = channel[0] if isinstance(channel, list) else channel
            event_id = event_id[0] if isinstance(event_id, list) else event_id
            if channel:
                return channel, event_id
    return None


def _fill(text: str) -> str:
    """A Sigma string value with its wildcards filled in."""
    return text.replace("\\*", "\x00").replace("*", "x").replace("?", "x").replace("\x00", "*")


def _value(modifiers: list[str], values: list[Any], rng: random.Random) -> Any:
    """A field value that satisfies ``field|modifiers: values`` (None: not attempted)."""
    if any(m in modifiers for m in ("re", "base64", "base64offset", "cidr", "gt", "gte", "lt", "lte", "fieldref",
                                    "wide", "utf16le", "utf16be", "utf16", "expand", "exists")):
        return None
    if not values or any(v is None or isinstance(v, (dict, list, bool)) for v in values):
        return None
    if all(isinstance(v, (int, float)) for v in values) and not modifiers:
        return values[0]
    texts = [_fill(str(v)) for v in values]
    if "all" in modifiers:
        return " ".join(texts) if "contains" in modifiers else None
    text = rng.choice(texts)
    if "contains" in modifiers:
        return f"x {text} x"
    if "startswith" in modifiers:
        return text + " x"
    if "endswith" in modifiers:
        return "C:\\x\\y" + text
    return text


def _selection_fields(definition: Any, rng: random.Random) -> dict[str, Any] | None:
    """Field values satisfying one search identifier (None: not attempted)."""
    if isinstance(definition, list):
        if definition and all(isinstance(v, dict) for v in definition):
            definition = definition[0]
        elif definition and all(isinstance(v, (str, int)) for v in definition):
            return {"Payload": f"x {_fill(str(definition[0]))} x"}  # keywords: any string field
        else:
            return None
    if not isinstance(definition, dict):
        return None
    out: dict[str, Any] = {}
    for key, values in definition.items():
        name, *modifiers = str(key).split("|")
        value = _value(modifiers, values if isinstance(values, list) else [values], rng)
        if value is None:
            return None
        if name in out and isinstance(out[name], str) and isinstance(value, str):
            value = f"{out[name]} {value}"
        out[name] = value
    return out


def rule_event(doc: dict[str, Any], mapping: list[dict[str, Any]], rng: random.Random, i: int) -> dict[str, Any] | None:
    """An event built to match the rule ``doc`` (parsed YAML), or None."""
    logsource = {k: str(v).lower() for k, v in (doc.get("logsource") or {}).items() if k in ("category", "service")}
    target = _channel_and_id(logsource, mapping)
    detection = doc.get("detection")
    if target is None or not isinstance(detection, dict):
        return None
    kind = CATEGORY_KINDS.get(logsource.get("category", ""), "service")
    base = quiet_event(rng, i, kind)
    system, data = base["Event"]["System"], base["Event"]["EventData"]
    system["Channel"], event_id = target
    if event_id is not None:
        system["EventID"] = event_id
    for name, definition in detection.items():
        if name in ("condition", "timeframe") or "filter" in name.lower() or "exclu" in name.lower():
            continue
        fields = _selection_fields(definition, rng)
        if fields is None:
            continue
        for field, value in fields.items():
            if field in ("EventID", "Channel", "Provider_Name"):
                if field == "Provider_Name":
                    system["Provider"]["@Name"] = value
                else:
                    system[field] = value
            elif field in data and isinstance(data[field], str) and isinstance(value, str) and value.startswith("x "):
                data[field] = f"{data[field]} {value}"
            else:
                data[field] = value
    return base


def rule_documents(rules_dir: str | Path) -> list[dict[str, Any]]:
    """The detection documents of the rule files under ``rules_dir`` (sorted by path)."""
    docs = []
    for path in sorted(Path(rules_dir).rglob("*.yml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and "detection" in doc:
                docs.append(doc)
    return docs


def windows_mapping_entries() -> list[dict[str, Any]]:
    """The logsource entries of the built-in Windows mapping."""
    from opmas.core.logsource import BUILTIN_DIR

    return yaml.safe_load((BUILTIN_DIR / "windows.yml").read_text())["logsources"]


def rule_events(docs: list[dict[str, Any]], seed: int = 2) -> list[dict[str, Any]]:
    """Candidate matching events, one per rule where one can be built (unchecked: see :func:`storm_events`)."""
    rng = random.Random(seed)
    mapping = windows_mapping_entries()
    return [event for i, doc in enumerate(docs) if (event := rule_event(doc, mapping, rng, i)) is not None]


def storm_events(count: int, matching: list[dict[str, Any]], share: float, seed: int = 3) -> Iterator[dict[str, Any]]:
    """``count`` events: a ``share`` of them drawn from ``matching`` (events known to give a finding),
    the rest quiet. Each drawn event gets its own record id and time."""
    rng = random.Random(seed)
    for i in range(count):
        if rng.random() < share:
            template = rng.choice(matching)
            system = dict(template["Event"]["System"])
            system["EventRecordID"] = 900000 + i
            when = START + timedelta(milliseconds=i * 5)
            system["TimeCreated"] = {"@SystemTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            yield {"Event": {"System": system, "EventData": template["Event"]["EventData"]}}
        else:
            yield quiet_event(rng, i)
