"""The SigmaHQ correlation specification's own example runs unmodified (and pySigma reads it too)."""
from __future__ import annotations

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from opmas.core.envelope import event_from_obj
from opmas.core.ruleset import RuleSource, load_ruleset
from tests.unit.correlation.helpers import run

SPEC_EXAMPLE = """
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
description: Detects multiple failed logins by a single user followed by a successful login of that user
references:
    - https://reference.com
author: Florian Roth (Nextron Systems)
date: 2023-06-16
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
description: Detects multiple failed logins within a certain amount of time
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
description: Detects a successful login
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"""


def _logon(event_id: int, second: int, user: str) -> dict:
    return {"Event": {
        "System": {"Provider": {"@Name": "Microsoft-Windows-Security-Auditing"}, "EventID": event_id,
                   "Channel": "Security", "Computer": "dc-01.corp.example",
                   "TimeCreated": {"@SystemTime": f"2026-11-25T04:{second // 60:02d}:{second % 60:02d}.000Z"}},
        "EventData": {"User": user, "IpAddress": "10.0.0.9", "LogonType": 3}}}


def test_pysigma_reads_the_example_as_correlations():
    collection = SigmaCollection.from_yaml(SPEC_EXAMPLE)
    kinds = [type(rule).__name__ for rule in collection.rules]
    assert kinds.count(SigmaCorrelationRule.__name__) == 2


def test_the_example_fires_for_ten_failures_then_a_success_of_one_user():
    ruleset, errors = load_ruleset([RuleSource("mr_failed_then_success.yml", SPEC_EXAMPLE)])
    assert not errors
    failures = [_logon(4625, 10 * i, "bob") for i in range(10)]
    other = [_logon(4625, 10 * i + 1, "alice") for i in range(9)]
    events = failures + other + [_logon(4624, 200, "bob"), _logon(4624, 201, "alice")]
    events.sort(key=lambda e: e["Event"]["System"]["TimeCreated"]["@SystemTime"])
    findings = run(ruleset, [event_from_obj(e) for e in events])
    assert [(f.rule_id, f.group_key, len(f.event_ids), f.severity) for f in findings] == [
        ("b180ead8-d58f-40b2-ae54-c8940995b9b6", "User=bob", 11, "high")]
    nine = [e for e in events if e not in failures[:1]]
    assert run(ruleset, [event_from_obj(e) for e in nine]) == []
