"""Syslog and auth.log lines become events with the OPMAS field conventions."""
from __future__ import annotations

import pytest

from opmas.agents.parse import parse_line, parse_syslog

CASES = [
    ("Nov 25 04:10:00 web-1 sshd[4410]: Failed password for invalid user admin from 203.0.113.7 port 51290 ssh2",
     {"process": {"name": "sshd", "pid": 4410}, "host": {"name": "web-1"}, "user": {"name": "admin"},
      "source": {"ip": "203.0.113.7", "port": 51290}, "event": {"dataset": "linux.auth", "outcome": "failure"},
      "message": "Failed password for invalid user admin from 203.0.113.7 port 51290 ssh2"}),
    ("2026-11-25T04:10:00.123456+00:00 db-02 sshd[7]: Accepted publickey for root from 10.0.9.9 port 22 ssh2: RSA x",
     {"@timestamp": "2026-11-25T04:10:00.123456Z", "user": {"name": "root"},
      "source": {"ip": "10.0.9.9", "port": 22}, "event": {"dataset": "linux.auth", "outcome": "success"}}),
    ("Nov  3 01:02:03 app sshd[9]: Invalid user oracle from 2001:db8::1 port 4444",
     {"user": {"name": "oracle"}, "source": {"ip": "2001:db8::1", "port": 4444}}),
    ("Nov 25 04:12:00 app-03 sudo[7101]: pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 "
     "euid=0 tty=/dev/pts/0 ruser=alice rhost=  user=alice",
     {"user": {"name": "alice"}, "event": {"dataset": "linux.auth", "outcome": "failure"}}),
    ("Nov 25 04:12:00 app-03 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash",
     {"process": {"name": "sudo"}, "user": {"name": "alice"},
      "message": "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash"}),
    ("Nov 25 04:12:00 app-03 sudo: www-data : user NOT in sudoers ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/sh",
     {"user": {"name": "www-data"}, "event": {"dataset": "linux.auth", "outcome": "failure"}}),
    ("<34>Nov 25 04:18:02 app-03 su[7401]: FAILED SU (to root) bob on pts/1",
     {"user": {"name": "bob"}, "log": {"syslog": {"priority": 34, "facility": {"code": 4, "name": "auth"},
                                                  "severity": {"code": 2, "name": "critical"}}}}),
    ('<165>1 2026-11-25T04:10:00.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] '
     "\ufeffAn application event",
     {"@timestamp": "2026-11-25T04:10:00.003000Z", "host": {"name": "mymachine.example.com"},
      "process": {"name": "evntslog"}, "message": "An application event"}),
    ("<13>1 - - - - - -", {"event": {"dataset": "linux.auth"}, "message": ""}),
]


@pytest.mark.parametrize("line, expected", CASES)
def test_syslog_lines(line, expected):
    data = parse_syslog(line)
    for key, value in expected.items():
        assert data[key] == value, key


def test_bsd_timestamps_take_the_current_year():
    data = parse_syslog("Jan  2 03:04:05 h p: m", year=2025)
    assert data["@timestamp"] == "2025-01-02T03:04:05.000000Z"


def test_json_lines_are_kept_and_garbage_is_not_syslog():
    assert parse_line('{"event": {"dataset": "web.access"}}') == {"event": {"dataset": "web.access"}}
    assert parse_line("just some words") is None
    assert parse_line("   ") is None
    assert parse_line('{"a": 1}', fmt="syslog") is None
