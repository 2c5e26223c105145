"""Log lines to event data with the OPMAS field conventions (ECS-like, nested objects).

Syslog lines (RFC 5424, RFC 3164 with or without ``<PRI>``, the ISO-timestamped form of
rsyslog's high-precision files) become ``event.dataset: linux.auth`` events with
``@timestamp``, ``host.name``, ``process.name``, ``process.pid``, ``message`` (the text after
``prog[pid]:``) and, where the message says, ``user.name``, ``source.ip``, ``source.port`` and
``event.outcome``. JSON lines are taken as they are.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import orjson

from opmas.core.event import format_time, parse_time

DATASET = "linux.auth"
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron") + tuple(f"local{i}" for i in range(8))
SEVERITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug")

_PRI = r"<(?P<pri>\d{1,3})>"
_RFC5424 = re.compile(
    _PRI + r"(?P<version>\d{1,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$", re.DOTALL)
_BSD_TIME = r"(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)"
_ISO_TIME = r"(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
_TAGGED = r"(?P<host>\S+) (?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$"
_RFC3164 = re.compile(rf"(?:{_PRI})?(?:{_BSD_TIME}|{_ISO_TIME}) {_TAGGED}", re.DOTALL)
_UNTAGGED = re.compile(rf"(?:{_PRI})?(?:{_BSD_TIME}|{_ISO_TIME}) (?P<host>\S+) (?P<msg>.*)$", re.DOTALL)

_FROM = r"(?P<ip>[0-9A-Fa-f:.]+) port (?P<port>\d+)"
_MESSAGE_FIELDS: list[tuple[re.Pattern, str | None]] = [
    (re.compile(r"^Accepted \S+ for (?P<user>\S+) from " + _FROM), "success"),
    (re.compile(r"^Failed \S+ for (?:invalid user )?(?P<user>\S*) from " + _FROM), "failure"),
    (re.compile(r"^Invalid user (?P<user>\S*) from " + _FROM), "failure"),
    (re.compile(r"^(?:Connection closed|Disconnected) by (?:authenticating|invalid) user (?P<user>\S*) " + _FROM), "failure"),
    (re.compile(r"^(?:Connection (?:closed|reset)|Disconnected|Received disconnect) (?:by|from) " + _FROM), None),
    (re.compile(r"^error: maximum authentication attempts exceeded for (?:invalid user )?(?P<user>\S+) from " + _FROM), "failure"),
    (re.compile(r"^FAILED SU \(to \S+\) (?P<user>\S+) on"), "failure"),
    (re.compile(r"^\s*(?P<user>[^\s:]+) : (?:\d+ incorrect password attempts?|user NOT in sudoers|command not allowed)"), "failure"),
    (re.compile(r"^\s*(?P<user>[^\s:]+) : TTY="), "success"),
    (re.compile(r"session opened for user (?P<user>[^\s(]+)"), "success"),
]
_PAM_FAILURE = re.compile(r"^pam_unix\([^)]*\): authentication failure;(?P<kv>.*)$")
_KV = re.compile(r"(\w+)=(\S*)")


def _syslog_time(match: re.Match, year: int | None = None) -> str | None:
    if match.groupdict().get("iso"):
        return format_time(parse_time(match["iso"]))
    if match.groupdict().get("ts"):
        now = datetime.now(timezone.utc)
        try:
            moment = datetime.strptime(f"{year or now.year} {match['ts']}", "%Y %b %d %H:%M:%S")
        except ValueError:
            return None
        moment = moment.replace(tzinfo=timezone.utc)
        if year is None and moment > now.replace(microsecond=0) and (moment - now).days > 0:
            moment = moment.replace(year=moment.year - 1)  # a December line read in January
        return format_time(moment.timestamp())
    return None


def message_fields(program: str | None, message: str) -> dict[str, Any]:
    """user.name, source.ip/port and event.outcome that an auth message states."""
    out: dict[str, Any] = {}
    pam = _PAM_FAILURE.match(message)
    if pam:
        kv = dict(_KV.findall(pam["kv"]))
        user = kv.get("logname") or kv.get("ruser") or kv.get("user")
        if user:
            out["user"] = {"name": user}
        if kv.get("rhost"):
            out["source"] = {"ip": kv["rhost"]}
        out["event"] = {"outcome": "failure"}
        return out
    for pattern, outcome in _MESSAGE_FIELDS:
        match = pattern.search(message)
        if match is None:
            continue
        groups = match.groupdict()
        if groups.get("user"):
            out["user"] = {"name": groups["user"]}
        if groups.get("ip"):
            out["source"] = {"ip": groups["ip"], "port": int(groups["port"])}
        if outcome:
            out["event"] = {"outcome": outcome}
        return out
    return out


def _pri_fields(pri: str | None) -> dict[str, Any]:
    if pri is None or int(pri) > 191:
        return {}
    facility, severity = divmod(int(pri), 8)
    return {"log": {"syslog": {"priority": int(pri),
                               "facility": {"code": facility, "name": FACILITIES[facility]},
                               "severity": {"code": severity, "name": SEVERITIES[severity]}}}}


def _build(timestamp: str | None, host: str | None, program: str | None, pid: str | None,
           message: str, extra: dict[str, Any]) -> dict[str, Any]:
    message = message.strip()
    data: dict[str, Any] = {"event": {"dataset": DATASET}, "message": message}
    if timestamp:
        data["@timestamp"] = timestamp
    if host and host != "-":
        data["host"] = {"name": host}
    process: dict[str, Any] = {}
    if program and program != "-":
        process["name"] = program
    if pid and pid.isdigit():
        process["pid"] = int(pid)
    if process:
        data["process"] = process
    for key, value in {**extra, **message_fields(program, message)}.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def parse_syslog(line: str, year: int | None = None) -> dict[str, Any] | None:
    """Event data of one syslog line (RFC 5424 or RFC 3164 / file form), or None if it is neither."""
    line = line.rstrip("\r\n")
    match = _RFC5424.match(line)
    if match:
        msg = (match["msg"] or "").removeprefix("\ufeff")
        extra = _pri_fields(match["pri"])
        if match["msgid"] != "-":
            extra.setdefault("log", {}).setdefault("syslog", {})["msgid"] = match["msgid"]
        if match["sd"] != "-":
            extra.setdefault("log", {}).setdefault("syslog", {})["structured_data"] = match["sd"]
        ts = None if match["ts"] == "-" else format_time(parse_time(match["ts"]))
        return _build(ts, match["host"], match["app"], match["procid"], msg, extra)
    match = _RFC3164.match(line) or _UNTAGGED.match(line)
    if match:
        groups = match.groupdict()
        return _build(_syslog_time(match, year), groups["host"], groups.get("tag"), groups.get("pid"),
                      groups["msg"], _pri_fields(groups.get("pri")))
    return None


def parse_line(line: str, fmt: str = "auto") -> dict[str, Any] | None:
    """Event data of a JSON or syslog line (``fmt``: auto, json, syslog); None for a line neither reads."""
    text = line.strip()
    if not text:
        return None
    if fmt in ("auto", "json") and text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
    if fmt in ("auto", "syslog"):
        return parse_syslog(text)
    return None
