"""A rule added through the API is checked (loaded, its ``tests:`` run) in a child process with a
deadline (engine/rule_tests.py): the caller's process stays free, a check that overruns is stopped
and reported with the rule's file, line and id (issue 11: a rule whose tests backtracked was accepted
after 59.9 s while the API's event loop was blocked)."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from opmas.core.rule_tests import CheckFailed, CheckTimeout, check_rule, run_isolated
from opmas.core.ruleset import RuleSource

REDOS_RULE = """title: Backtracking
id: 0c0c0c0c-0000-4000-8000-000000000011
logsource: {}
level: high
detection:
  sel:
    CommandLine|re:
      - '(a{1,30}){1,30}$'
      - 'a*a*a*a*a*a*a*a*b'
      - '(?:a{1,10}){1,10}b'
  condition: sel
tests:
  match:
    - {CommandLine: aaaa}
  no_match:
    - {CommandLine: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!}
"""


def spin(seconds: float, where: dict[str, Any], progress) -> str:
    """Busy for ``seconds`` (holding its process's GIL), after reporting ``where``."""
    progress(where)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


def fail(progress) -> None:
    raise ValueError("broken check")


def hog(progress) -> int:
    return len(bytearray(8 << 30))


@pytest.mark.timeout(120)
def test_rule_with_catastrophic_regexes_and_their_tests_is_checked_quickly() -> None:
    run_isolated(spin, 0, {}, timeout=60)  # a warm child: its start is not what is measured
    started = time.monotonic()
    result = run_isolated(check_rule, [RuleSource("api:new rule", REDOS_RULE)], "api:new rule", timeout=30)
    assert result == {"ok": True, "rule": {"id": "0c0c0c0c-0000-4000-8000-000000000011", "title": "Backtracking",
                                           "level": "high", "kind": "detection"}}
    assert time.monotonic() - started < 10  # re: over a minute on the no_match case


def test_check_rule_reports_errors_and_failed_cases_with_their_place() -> None:
    failing = REDOS_RULE.replace("- {CommandLine: aaaa}", "- {CommandLine: cccc}")
    result = check_rule([RuleSource("api:x", failing)], "api:x")
    assert result == {"ok": False, "message": "1 test case(s) of the rule failed", "errors": [
        {"file": "api:x", "line": 1, "rule_id": "0c0c0c0c-0000-4000-8000-000000000011", "code": "RULE_TEST_FAILED",
         "message": "tests.match case #1: expected a finding, got none"}]}
    broken = check_rule([RuleSource("api:y", REDOS_RULE.replace("condition: sel", "condition: nope"))], "api:y")
    assert not broken["ok"] and broken["errors"][0]["file"] == "api:y" and broken["errors"][0]["line"] == 11
    assert broken["errors"][0]["code"] == "UNDEFINED_SEARCH"


@pytest.mark.timeout(120)
def test_a_check_that_overruns_is_stopped_and_located_while_the_caller_runs_on() -> None:
    run_isolated(spin, 0, {}, timeout=60)  # warm
    where = {"file": "api:new rule", "line": 1, "rule_id": "r-1", "step": "tests.match case #2"}
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:  # what an event loop would do meanwhile
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    started = time.monotonic()
    try:
        with pytest.raises(CheckTimeout) as raised:
            run_isolated(spin, 600, where, timeout=1.5)
    finally:
        stop.set()
        ticker.join()
    assert 1.5 <= time.monotonic() - started < 10
    assert raised.value.where == where and "tests.match case #2 did not finish within 1.5 s" in str(raised.value)
    assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5  # never blocked
    assert run_isolated(spin, 0, {}, timeout=60) == "done"  # the next check gets a working child


def test_a_check_that_raises_or_runs_out_of_its_memory_is_reported() -> None:
    with pytest.raises(CheckFailed, match="ValueError: broken check"):
        run_isolated(fail, timeout=60)
    with pytest.raises(CheckFailed, match="MemoryError"):  # the checker's address space is capped
        run_isolated(hog, timeout=60)
