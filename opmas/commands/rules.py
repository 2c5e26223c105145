"""``opmas rules validate PATH...`` and ``opmas rules test PATH...``."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.errors import RuleError
    from engine.ruleset import RuleSource


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rules`` with its ``validate`` and ``test`` sub-commands."""
    rules = subparsers.add_parser("rules", help="check and test rule files")
    sub = rules.add_subparsers(dest="rules_command", required=True)
    validate = sub.add_parser("validate", help="list every error of the rule files; non-zero exit on errors")
    test = sub.add_parser("test", help="run the rules' own tests; non-zero exit on any failure")
    for parser, func in ((validate, validate_command), (test, test_command)):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="rule files or directories")
        parser.add_argument("--mapping", action="append", default=[], metavar="FILE",
                            help="extra logsource mapping file (repeatable)")
        parser.set_defaults(func=func)
    reload = sub.add_parser("reload", help="make the running engine reload its rule files (refused if any has errors)")
    reload.add_argument("--nats", help="NATS URL (default: NATS_URL, else the running `opmas up` of the data dir)")
    reload.set_defaults(func=reload_command)


def _sources(paths: list[str]) -> list[RuleSource] | None:
    from engine.ruleset import sources_from_paths

    try:
        return sources_from_paths(paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _print_errors(errors: list[RuleError]) -> tuple[int, int]:
    for error in errors:
        print(error)
    failures = sum(1 for e in errors if e.severity == "error")
    return failures, len(errors) - failures


def validate_command(args: argparse.Namespace) -> int:
    """Load every rule, print every error and warning; exit 1 if any error."""
    from engine.ruleset import load_ruleset

    sources = _sources(args.paths)
    if sources is None:
        return 2
    ruleset, errors = load_ruleset(sources, args.mapping)
    failures, warnings = _print_errors(errors)
    print(f"{len(sources)} files, {len(ruleset.rules)} rules loaded, {failures} errors, {warnings} warnings")
    return 1 if failures else 0


def test_command(args: argparse.Namespace) -> int:
    """Run every test case of every rule; exit 1 on a failed case or a rule that does not load."""
    from engine.rule_tests import run_rule_tests

    sources = _sources(args.paths)
    if sources is None:
        return 2
    results, errors = run_rule_tests(sources, args.mapping)
    failures, _ = _print_errors(errors)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(result)
    print(f"{len(results)} cases, {len(results) - len(failed)} passed, {len(failed)} failed, {failures} rule errors")
    return 1 if failed or failures else 0


def reload_command(args: argparse.Namespace) -> int:
    """Send a reload request on opmas.engine.reload; print the engine's answer; exit 1 if refused."""
    import asyncio

    import nats.errors

    from connectors.nats.control import request_reload
    from opmas.config import load_config

    config = load_config()
    url = args.nats or config.client_nats_url()
    try:
        answer = asyncio.run(request_reload(url))
    except (OSError, nats.errors.NoServersError, nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        print(f"error: no engine answered on {url}: {type(exc).__name__} (is `opmas up` running?)", file=sys.stderr)
        return 2
    for error in answer.get("errors", []):
        print(error)
    if answer.get("ok"):
        print(f"reloaded: {answer.get('rules')} rules running")
        return 0
    print(f"refused: the running rule set ({answer.get('rules')} rules) stays")
    return 1
