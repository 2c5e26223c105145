"""Hostile rules through POST /rules (issue 11, items 3 and 4): a rule of catastrophic regexes with
``tests:`` on a 50-character near miss is checked at once, a YAML alias bomb is a located 422, and a
check that overruns its deadline is stopped and answered 422 with file, line and rule id; the API
answers other requests all along (the check runs in a child process)."""
from __future__ import annotations

import threading
import time

import pytest

import opmas.core.rule_tests
from tests.unit.engine.test_rule_check import REDOS_RULE
from tests.unit.engine.test_yaml_limits import BOMB


def _rss_mib() -> float:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024


class Latency:
    """GET /auth/me in a loop on another thread: the slowest answer while the block runs."""

    def __init__(self, stack) -> None:
        self.stack, self.worst, self.count = stack, 0.0, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        with self.stack.client(self.stack.token()) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                assert client.get("/auth/me").status_code == 200
                self.worst = max(self.worst, time.monotonic() - started)
                self.count += 1
                time.sleep(0.05)

    def __enter__(self) -> "Latency":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.count and time.monotonic() < deadline:  # answering before the block starts
            time.sleep(0.01)
        assert self.count, "GET /auth/me never answered"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.timeout(180)
def test_rule_with_catastrophic_regexes_is_checked_at_once(stack, admin) -> None:
    with Latency(stack) as latency:
        started = time.monotonic()
        created = admin.post("/rules", json={"source": REDOS_RULE})
        elapsed = time.monotonic() - started
    assert created.status_code == 201, created.text
    assert elapsed < 60  # a fresh checker process starts; re took over a minute on the tests alone
    assert latency.worst < 2.0, (latency.count, latency.worst)
    again = time.monotonic()
    updated = admin.put(f"/rules/{created.json()['id']}", json={"source": REDOS_RULE.replace("level: high", "level: low")})
    assert updated.status_code == 200 and time.monotonic() - again < 10  # a warm checker


@pytest.mark.timeout(120)
def test_alias_bomb_rule_is_a_located_422_in_bounded_memory(stack, admin) -> None:
    rule = REDOS_RULE.replace("0c0c0c0c-0000-4000-8000-000000000011", "0c0c0c0c-0000-4000-8000-000000000012")
    source = rule + "".join(f"x{line}\n" for line in BOMB.splitlines())
    before = _rss_mib()
    started = time.monotonic()
    answer = admin.post("/rules", json={"source": source})
    assert answer.status_code == 422 and time.monotonic() - started < 30
    error = answer.json()["detail"]["errors"][0]
    assert error["file"] == "api:new rule" and error["line"] == len(rule.splitlines()) + 2
    assert "YAML alias *a is not allowed" in error["message"] and error["code"] == "YAML_ALIAS"
    assert _rss_mib() - before < 200  # the API and its checker: the issue saw 6.7 GB


@pytest.mark.timeout(180)
def test_a_check_past_its_deadline_is_stopped_and_located(stack, admin, monkeypatch) -> None:
    rule = REDOS_RULE.replace("0c0c0c0c-0000-4000-8000-000000000011", "0c0c0c0c-0000-4000-8000-000000000013")
    cases = "".join(f"    - {{CommandLine: 'x{i}'}}\n" for i in range(20_000))  # ~20 s of cases
    source = rule.replace("  no_match:\n", "  no_match:\n" + cases)
    assert admin.post("/rules", json={"source": REDOS_RULE.replace("-000000000011", "-000000000014")}
                      ).status_code == 201  # a warm checker: the deadline counts the check only
    monkeypatch.setattr(opmas.core.rule_tests, "RULE_CHECK_TIMEOUT", 3.0)
    with Latency(stack) as latency:
        started = time.monotonic()
        answer = admin.post("/rules", json={"source": source})
        elapsed = time.monotonic() - started
    assert answer.status_code == 422, answer.text
    assert 3.0 <= elapsed < 30
    detail = answer.json()["detail"]
    error = detail["errors"][0]
    assert detail["message"] == "checking the rule took too long" and error["file"] == "api:new rule"
    assert "did not finish within 3 s (stopped)" in error["message"] and error["code"] == "RULE_CHECK_TIMEOUT"
    if error["message"].startswith("tests."):  # (on a slow machine the deadline may pass while loading)
        assert error["line"] == 1 and error["rule_id"] == "0c0c0c0c-0000-4000-8000-000000000013"
    assert latency.worst < 2.0, latency.worst
    assert admin.get("/rules/0c0c0c0c-0000-4000-8000-000000000013").status_code == 404
