"""Run the ``tests:`` blocks of rule files: match cases must yield a finding, no_match cases none.

Each file is loaded on its own (correlations see the rules they reference); each case
runs through a fresh Processor and is flushed, so windows close as at end of input.
A detection rule counts as matching where it matched the event, even if it only
feeds correlations (``generate: false``).

A rule added through the management API is checked by :func:`check_rule` in a child process
(:func:`run_isolated`) with a deadline: loading it and running its cases take CPU (and ``re``
holds the GIL), which must neither block the API's event loop nor go on without end. The child
reports which case it is on, so a check that overruns is answered with the rule's file, line
and id (:class:`CheckTimeout`); the child is killed.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opmas.core.errors import Code, RuleError
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one test case of one rule."""

    file: str
    rule_id: str
    expectation: str  # "match" | "no_match"
    index: int  # position in the rule's list, from 1
    passed: bool
    detail: str = ""

    @property
    def code(self) -> Code | None:
        """RULE_TEST_FAILED for a failed case, else None."""
        return None if self.passed else Code.RULE_TEST_FAILED

    def __str__(self) -> str:
        status = "ok" if self.passed else "FAIL"
        detail = f": {self.detail}" if self.detail else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{status} {self.file} [{self.rule_id}] {self.expectation} case #{self.index}{detail}{code}"


def _events(case: Any) -> list[dict[str, Any]]:
    if isinstance(case, dict) and isinstance(case.get("events"), list) and len(case) == 1:
        return [e for e in case["events"] if isinstance(e, dict)]
    return [case]


def run_case(ruleset: RuleSet, rule_id: str, case: Any) -> bool:
    """True where ``rule_id`` yields a finding (or, for a detection rule, matches) on the case."""
    detector = Detector(ruleset)
    index = detector.processor.index
    events = [event_from_obj(obj) for obj in _events(case)]
    matched = False
    for event in events:
        view = index.view(event.data)
        if view is not None and any(rule.id == rule_id for rule in index.matches(view)):
            matched = True
    findings = detector.process(events) + detector.flush()
    return matched or any(f.rule_id == rule_id for f in findings)


def run_rule_tests(sources: Sequence[RuleSource], mappings: Sequence[str | Path] = ()
                   ) -> tuple[list[CaseResult], list[RuleError]]:
    """Every test case of every rule in ``sources``, plus the load errors of each file."""
    results: list[CaseResult] = []
    errors: list[RuleError] = []
    for source in sources:
        ruleset, problems = load_ruleset([source], mappings)
        errors.extend(problems)
        for meta in ruleset.rules:
            for expectation in ("match", "no_match"):
                for index, case in enumerate(meta.tests.get(expectation) or [], start=1):
                    hit = run_case(ruleset, meta.id, case)
                    passed = hit if expectation == "match" else not hit
                    detail = "" if passed else ("expected a finding, got none" if expectation == "match"
                                                else "expected no finding, got one")
                    results.append(CaseResult(source.name, meta.id, expectation, index, passed, detail))
    return results, errors


# --- checking one rule, in a child process with a deadline -------------------------------------------

RULE_CHECK_TIMEOUT = float(os.environ.get("OPMAS_RULE_CHECK_TIMEOUT") or 30.0)  # seconds, load + cases
_START_TIMEOUT = 120.0  # a fresh child imports the engine before the deadline starts
_IDLE_WORKERS = 2
_MEMORY_LIMIT = 4 << 30  # address space of a checker process


def check_rule(sources: Sequence[RuleSource], name: str,
               progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Load ``sources`` (the rule ``name`` last among them) and run the ``tests:`` cases of the rule
    in ``name``: ``{"ok": True, "rule": {id, title, level, kind}}``, or ``{"ok": False, "message": ...,
    "errors": [{file, line, rule_id, code, message}, ...]}`` for its load errors or failed cases. ``progress``
    is told where the check is (``{"file", "line", "rule_id", "step"}``)."""
    report = progress or (lambda where: None)
    report({"file": name, "line": None, "rule_id": None, "step": "loading the rule"})
    ruleset, problems = load_ruleset(sources)
    own = [e for e in problems if e.file == name and e.severity == "error"]
    if own:
        return {"ok": False, "message": f"{len(own)} error(s) in the rule",
                "errors": [{"file": e.file, "line": e.line, "rule_id": e.rule_id, "code": str(e.code),
                            "message": e.message} for e in own]}
    rules = [r for r in ruleset.rules if r.source == name]
    if len(rules) != 1:
        return {"ok": False, "message": f"a rule source must hold exactly one rule, found {len(rules)}", "errors": []}
    rule = rules[0]
    failed = []
    for expectation in ("match", "no_match"):
        for index, case in enumerate(rule.tests.get(expectation) or [], start=1):
            report({"file": name, "line": rule.line, "rule_id": rule.id, "step": f"tests.{expectation} case #{index}"})
            if run_case(ruleset, rule.id, case) != (expectation == "match"):
                outcome = "a finding, got none" if expectation == "match" else "no finding, got one"
                failed.append({"file": name, "line": rule.line, "rule_id": rule.id,
                               "code": str(Code.RULE_TEST_FAILED),
                               "message": f"tests.{expectation} case #{index}: expected {outcome}"})
    if failed:
        return {"ok": False, "message": f"{len(failed)} test case(s) of the rule failed", "errors": failed}
    return {"ok": True, "rule": {"id": rule.id, "title": rule.title, "level": rule.level, "kind": rule.kind}}


class CheckTimeout(Exception):
    """A check that did not finish in time; ``where`` is its last progress report."""

    code = Code.RULE_CHECK_TIMEOUT

    def __init__(self, seconds: float, where: dict[str, Any]):
        self.seconds = seconds
        self.where = where
        step = where.get("step") or "starting"
        super().__init__(f"{step} did not finish within {seconds:g} s (stopped)")


class CheckFailed(Exception):
    """The check itself failed (it raised, or its process died)."""

    code = Code.RULE_CHECK_FAILED


def _serve(conn: Any) -> None:  # the child: one request at a time until the parent goes away
    try:  # a hostile rule meets a MemoryError here (reported), not the machine's memory
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, ValueError, OSError):
        pass
    conn.send(("ready", None))
    while True:
        try:
            func, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = func(*args, progress=lambda where: conn.send(("progress", where)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("done", result))


class _Worker:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # the API process has threads: no fork
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), name="opmas-rule-check", daemon=True)
        self.process.start()
        child.close()
        self.ready = False

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


_idle: list[_Worker] = []
_lock = threading.Lock()


def _receive(worker: _Worker, deadline: float) -> tuple[str, Any]:
    left = deadline - time.monotonic()
    if left <= 0 or not worker.conn.poll(left):
        raise TimeoutError
    return worker.conn.recv()


def run_isolated(func: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """``func(*args, progress=...)`` in a child process (kept for the next call), at most ``timeout``
    seconds (default :data:`RULE_CHECK_TIMEOUT`) once the child is ready; blocking, so call it from a
    thread (``asyncio.to_thread``). Raises CheckTimeout (the child is killed) or CheckFailed."""
    timeout = RULE_CHECK_TIMEOUT if timeout is None else timeout
    with _lock:
        worker = _idle.pop() if _idle else None
    if worker is not None and not worker.process.is_alive():
        worker.kill()  # (reaps it)
        worker = None
    if worker is None:
        worker = _Worker()
    where: dict[str, Any] = {}
    if not worker.ready:
        try:
            worker.ready = _receive(worker, time.monotonic() + _START_TIMEOUT)[0] == "ready"
        except (TimeoutError, EOFError, OSError):
            pass
        if not worker.ready:
            worker.kill()
            raise CheckFailed("the rule checker process did not start")
    try:
        worker.conn.send((func, args))
        deadline = time.monotonic() + timeout
        while True:
            kind, payload = _receive(worker, deadline)
            if kind == "progress":
                where = payload
                continue
            with _lock:
                if len(_idle) < _IDLE_WORKERS:
                    _idle.append(worker)
                    worker = None
            if worker is not None:
                worker.kill()
            if kind == "error":
                raise CheckFailed(payload)
            return payload
    except TimeoutError:
        worker.kill()
        raise CheckTimeout(timeout, where) from None
    except (EOFError, OSError) as exc:
        worker.kill()
        raise CheckFailed(f"the rule checker process ended: {exc or type(exc).__name__}") from None
