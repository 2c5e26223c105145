"""Realistic, deterministic event generator (same seed -> same events).

Kinds:
* ``windows``: process creation as EVTX-JSON, Sysmon event 1 and Security 4688 (mixed 3:1),
* ``linux``: auth log events (sshd, sudo, su) as ECS-like JSON (``event.dataset: linux.auth``),
* ``web``: web server access log events (``event.dataset: web.access``),
* ``mixed``: all of the above.

    python -m benchmarks.generate --kind windows -n 100000 --seed 1 -o events.jsonl
"""
from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

SYSMON = "Microsoft-Windows-Sysmon/Operational"
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)

SYSTEM32 = "C:\\Windows\\System32\\"
# (image, command line arguments); the first BENIGN entries are everyday activity, the rest
# (recon, persistence, odd locations) are rare, as in real process creation telemetry.
PROGRAMS = [
    (SYSTEM32 + "svchost.exe", ["-k netsvcs -p -s Schedule", "-k LocalService -p", "-k DcomLaunch -p"]),
    (SYSTEM32 + "conhost.exe", ["0xffffffff -ForceV1"]),
    (SYSTEM32 + "cmd.exe", ["/c echo %TEMP%", "/c dir C:\\Users", "/c ipconfig /all", "/c type nul > x.txt"]),
    (SYSTEM32 + "WindowsPowerShell\\v1.0\\powershell.exe",
     ["-NoProfile -ExecutionPolicy Bypass -File C:\\scripts\\inventory.ps1", "-Command Get-Service",
      "-nop -c \"Get-Process | Sort CPU\""]),
    (SYSTEM32 + "rundll32.exe", ["shell32.dll,Control_RunDLL", "C:\\Windows\\System32\\inetcpl.cpl,ClearMyTracksByProcess 8"]),
    (SYSTEM32 + "taskhostw.exe", [""]),
    (SYSTEM32 + "wbem\\WmiPrvSE.exe", ["-secured -Embedding"]),
    (SYSTEM32 + "SearchProtocolHost.exe", ["Global\\UsGthrFltPipeMssGthrPipe1_ Global\\UsGthrCtrlFltPipeMssGthrPipe1 1"]),
    (SYSTEM32 + "msiexec.exe", ["/i C:\\Temp\\setup.msi /qn", "/V"]),
    ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     ["--type=renderer --field-trial-handle=1234,i,567 --lang=en-US", "--type=gpu-process --no-sandbox", ""]),
    ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe", ["--type=utility --utility-sub-type=network.mojom.NetworkService"]),
    ("C:\\Program Files\\Microsoft VS Code\\Code.exe", ["--type=renderer", "C:\\src\\project"]),
    ("C:\\Program Files\\Git\\cmd\\git.exe", ["status", "fetch origin", "log --oneline -n 20"]),
    ("C:\\Users\\{user}\\AppData\\Local\\Programs\\Python\\Python311\\python.exe", ["-m pip list", "manage.py runserver"]),
    ("C:\\Windows\\explorer.exe", [""]),
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", ["/n C:\\Users\\{user}\\Documents\\report.docx"]),
    ("C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\csc.exe", ["/noconfig /fullpaths @C:\\Temp\\x.cmdline"]),
    (SYSTEM32 + "whoami.exe", ["/all", "/priv", ""]),
    (SYSTEM32 + "net.exe", ["user", "localgroup administrators", "use \\\\fileserver\\share"]),
    (SYSTEM32 + "reg.exe", ["query HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"]),
    (SYSTEM32 + "schtasks.exe", ["/query /fo LIST", "/create /tn Backup /tr C:\\backup.bat /sc daily"]),
    ("C:\\Users\\{user}\\AppData\\Local\\Temp\\update.exe", ["/silent"]),
]
RARE = 5  # the last RARE programs
WEIGHTS = [40.0] * (len(PROGRAMS) - RARE) + [1.0] * RARE
PARENTS = [SYSTEM32 + "services.exe", "C:\\Windows\\explorer.exe", SYSTEM32 + "svchost.exe",
           SYSTEM32 + "cmd.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
           SYSTEM32 + "WindowsPowerShell\\v1.0\\powershell.exe"]
USERS = ["alice", "bob", "carol", "dave", "svc_backup", "SYSTEM"]
HOSTS = ["WS-0101", "WS-0102", "WS-0217", "SRV-DC01", "SRV-FILE02"]


def _guid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return "{" + f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".upper() + "}"


def _time(i: int, rng: random.Random) -> datetime:
    return START + timedelta(milliseconds=i * 250 + rng.randrange(250))


def windows_process(rng: random.Random, i: int) -> dict[str, Any]:
    """One process creation: Sysmon event 1 (75%) or Security 4688, as EVTX-JSON."""
    image, args = rng.choices(PROGRAMS, WEIGHTS)[0]
    user = rng.choice(USERS)
    image = image.replace("{user}", user)
    arg = rng.choice(args).replace("{user}", user)
    command_line = f'"{image}" {arg}'.strip() if " " in image else f"{image.rsplit(chr(92), 1)[-1]} {arg}".strip()
    parent = rng.choice(PARENTS)
    host = rng.choice(HOSTS)
    when = _time(i, rng)
    pid, ppid = rng.randrange(400, 20000), rng.randrange(400, 20000)
    if rng.random() < 0.75:
        system = {
            "Provider": {"@Name": "Microsoft-Windows-Sysmon", "@Guid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}"},
            "EventID": 1, "Version": 5, "Level": 4, "Task": 1, "Opcode": 0, "Keywords": "0x8000000000000000",
            "TimeCreated": {"@SystemTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
            "EventRecordID": 100000 + i, "Correlation": None,
            "Execution": {"@ProcessID": 3012, "@ThreadID": 4100}, "Channel": SYSMON, "Computer": f"{host}.corp.example",
            "Security": {"@UserID": "S-1-5-18"},
        }
        data = {
            "RuleName": "-", "UtcTime": when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], "ProcessGuid": _guid(rng),
            "ProcessId": pid, "Image": image, "FileVersion": "10.0.19041.1", "Description": image.rsplit("\\", 1)[-1],
            "Product": "Microsoft® Windows® Operating System", "Company": "Microsoft Corporation",
            "OriginalFileName": image.rsplit("\\", 1)[-1], "CommandLine": command_line,
            "CurrentDirectory": f"C:\\Users\\{user}\\", "User": f"CORP\\{user}", "LogonGuid": _guid(rng),
            "LogonId": f"0x{rng.getrandbits(24):x}", "TerminalSessionId": 1, "IntegrityLevel": rng.choice(["Medium", "High", "System"]),
            "Hashes": f"SHA256={rng.getrandbits(256):064X}", "ParentProcessGuid": _guid(rng), "ParentProcessId": ppid,
            "ParentImage": parent, "ParentCommandLine": parent.rsplit("\\", 1)[-1], "ParentUser": f"CORP\\{user}",
        }
    else:
        system = {
            "Provider": {"@Name": "Microsoft-Windows-Security-Auditing", "@Guid": "{54849625-5478-4994-A5BA-3E3B0328C30D}"},
            "EventID": 4688, "Version": 2, "Level": 0, "Task": 13312, "Opcode": 0, "Keywords": "0x8020000000000000",
            "TimeCreated": {"@SystemTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
            "EventRecordID": 500000 + i, "Correlation": None,
            "Execution": {"@ProcessID": 4, "@ThreadID": 7700}, "Channel": "Security", "Computer": f"{host}.corp.example",
            "Security": None,
        }
        data = {
            "SubjectUserSid": "S-1-5-18", "SubjectUserName": user, "SubjectDomainName": "CORP",
            "SubjectLogonId": f"0x{rng.getrandbits(24):x}", "NewProcessId": hex(pid), "NewProcessName": image,
            "TokenElevationType": "%%1936", "ProcessId": hex(ppid), "CommandLine": command_line,
            "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
            "ParentProcessName": parent, "MandatoryLabel": "S-1-16-12288",
        }
    return {"Event": {"System": system, "EventData": data}}


def linux_auth(rng: random.Random, i: int) -> dict[str, Any]:
    """One auth.log line as an ECS-like event: sshd logins, sudo, su."""
    host = rng.choice(["web-01", "db-01", "bastion"])
    user = rng.choices(["alice", "bob", "deploy", "root", "admin", "oracle"], [30, 30, 30, 2, 2, 1])[0]
    ip = f"{rng.choice([10, 192, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    port = rng.randrange(1024, 65535)
    pid = rng.randrange(1000, 60000)
    when = _time(i, rng).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    roll = rng.random()
    event: dict[str, Any] = {"@timestamp": when, "event": {"dataset": "linux.auth"}, "host": {"name": host}}
    if roll < 0.45:
        outcome = "failure" if rng.random() < 0.1 else "success"
        verb = "Failed" if outcome == "failure" else "Accepted"
        message = f"{verb} password for {user} from {ip} port {port} ssh2"
        event.update(process={"name": "sshd", "pid": pid}, user={"name": user}, source={"ip": ip, "port": port},
                     message=message)
        event["event"]["outcome"] = outcome
    elif roll < 0.8:
        command = rng.choices(["/usr/bin/systemctl restart nginx", "/usr/bin/apt update", "/usr/bin/journalctl -u ssh",
                               "/bin/cat /etc/shadow", "/bin/bash"], [30, 30, 30, 1, 1])[0]
        message = f"{user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND={command}"
        event.update(process={"name": "sudo", "pid": pid}, user={"name": user}, message=message)
    else:
        message = f"pam_unix(su:session): session opened for user root by {user}(uid=1000)"
        event.update(process={"name": "su", "pid": pid}, user={"name": user}, message=message)
    event["event"].setdefault("outcome", "success")
    return event


def web_access(rng: random.Random, i: int) -> dict[str, Any]:
    """One web server access log entry as an ECS-like event."""
    ip = f"{rng.choice([66, 198, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    # everyday requests, then rare probes and attacks
    path, query = rng.choices([
        ("/", ""), ("/index.html", ""), ("/api/v1/items", "page=2"), ("/login", ""), ("/static/app.js", "v=3"),
        ("/search", "q=shoes"), ("/wp-login.php", ""), ("/.env", ""), ("/search", "q=1' OR '1'='1"),
        ("/cgi-bin/../../etc/passwd", ""),
    ], [30, 30, 30, 30, 30, 30, 1, 1, 1, 1])[0]
    agent = rng.choices(["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
                         "curl/8.4.0", "python-requests/2.31.0", "sqlmap/1.7.2#stable (https://sqlmap.org)"],
                        [60, 5, 5, 1])[0]
    method = rng.choice(["GET", "GET", "GET", "POST"])
    status = rng.choice([200, 200, 200, 301, 404, 500])
    when = _time(i, rng)
    original = path + (f"?{query}" if query else "")
    return {
        "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": {"dataset": "web.access"},
        "source": {"ip": ip}, "http": {"request": {"method": method}, "response": {"status_code": status}},
        "url": {"path": path, "query": query, "original": original, "domain": "shop.example.com"},
        "user_agent": {"original": agent},
        "message": f'{ip} - - [{when:%d/%b/%Y:%H:%M:%S +0000}] "{method} {original} HTTP/1.1" {status} 512 "-" "{agent}"',
    }


KINDS: dict[str, list[Callable[[random.Random, int], dict[str, Any]]]] = {
    "windows": [windows_process],
    "linux": [linux_auth],
    "web": [web_access],
    "mixed": [windows_process, linux_auth, web_access],
}


def generate(kind: str, count: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``count`` events of ``kind``, deterministic for ``seed``."""
    rng = random.Random(seed)
    makers = KINDS[kind]
    for i in range(count):
        yield makers[i % len(makers)](rng, i)


def main(argv: list[str] | None = None) -> int:
    """CLI: write N events as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=sorted(KINDS), default="windows")
    parser.add_argument("-n", "--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", help="output file (default stdout)")
    args = parser.parse_args(argv)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        for event in generate(args.kind, args.count, args.seed):
            out.write(orjson.dumps(event) + b"\n")
    finally:
        if args.output:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
