"""``opmas rules validate|test PATH...``, ``opmas rules import PACK`` and ``opmas rules reload``."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from opmas.core.finding import SEVERITIES
from opmas.paths import RULES_DIR


if TYPE_CHECKING:
    from opmas.core.errors import RuleError
    from opmas.core.ruleset import RuleSource


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rules`` with its ``validate`` and ``test`` sub-commands."""
    rules = subparsers.add_parser("rules", help="check and test rule files")
    sub = rules.add_subparsers(dest="rules_command", required=True)
    validate = sub.add_parser("validate", help="list every error of the rule files; non-zero exit on errors")
    test = sub.add_parser("test", help="run the rules' own tests; non-zero exit on any failure")
    for parser, func in ((validate, validate_command), (test, test_command)):
        parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                            help="rule files or directories (default: the shipped rules)")
        parser.add_argument("--mapping", action="append", default=[], metavar="FILE",
                            help="extra logsource mapping file (repeatable)")
        parser.set_defaults(func=func)
    validate.add_argument("--format", choices=("text", "json"), default="text",
                          help="text: one line per error or warning, then a summary (default); json: one JSON "
                               "object with the counts and every diagnostic's file, line, rule_id, severity, code "
                               "and message (codes: docs/diagnostics.md)")
    pack = sub.add_parser("import", help="copy the rules of a SigmaHQ-layout tree or release zip that load into a "
                                         "rules directory; report what was left out and why")
    pack.add_argument("pack", metavar="PATH|ZIP", help="a folder of rule files (SigmaHQ layout) or a release zip")
    pack.add_argument("--into", type=Path, metavar="DIR",
                      help="rules directory to copy into (default: <first configured rules directory>/sigma)")
    pack.add_argument("--status", default="stable,test,experimental",
                      help="statuses to take, comma-separated (default stable,test,experimental; "
                           "also deprecated, unsupported)")
    pack.add_argument("--min-level", choices=SEVERITIES, metavar="LEVEL", help="only rules at this level or above")
    pack.add_argument("--mapping", action="append", default=[], metavar="FILE",
                      help="extra logsource mapping file the rules are loaded with (repeatable)")
    pack.set_defaults(func=import_command)
    reload = sub.add_parser("reload", help="make the running engine reload its rule files (refused if any has errors)")
    reload.add_argument("--nats", help="NATS URL (default: NATS_URL, else the running `opmas up` of the data dir)")
    reload.set_defaults(func=reload_command)


def _sources(paths: list[str]) -> list[RuleSource] | None:
    from opmas.core.ruleset import sources_from_paths

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
    from opmas.core.ruleset import load_ruleset

    sources = _sources(args.paths or [RULES_DIR])
    if sources is None:
        return 2
    ruleset, errors = load_ruleset(sources, args.mapping)
    if args.format == "json":
        failures = sum(1 for e in errors if e.severity == "error")
        print(json.dumps({"files": len(sources), "rules": len(ruleset.rules), "errors": failures,
                          "warnings": len(errors) - failures, "diagnostics": [e.to_dict() for e in errors]},
                         indent=2, ensure_ascii=False))
        return 1 if failures else 0
    failures, warnings = _print_errors(errors)
    print(f"{len(sources)} files, {len(ruleset.rules)} rules loaded, {failures} errors, {warnings} warnings")
    return 1 if failures else 0


def test_command(args: argparse.Namespace) -> int:
    """Run every test case of every rule; exit 1 on a failed case or a rule that does not load."""
    from opmas.core.rule_tests import run_rule_tests

    sources = _sources(args.paths or [RULES_DIR])
    if sources is None:
        return 2
    results, errors = run_rule_tests(sources, args.mapping)
    failures, _ = _print_errors(errors)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(result)
    print(f"{len(results)} cases, {len(results) - len(failed)} passed, {len(failed)} failed, {failures} rule errors")
    return 1 if failed or failures else 0


def import_command(args: argparse.Namespace) -> int:
    """Import a rule pack; print each file left out with why, then a summary; exit 1 if nothing was imported."""
    import zipfile

    from opmas.config import ConfigError, load_config
    from opmas.cli.rule_import import STATUSES, import_pack

    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        print(f"error: unknown status {', '.join(unknown)} (known: {', '.join(STATUSES)})", file=sys.stderr)
        return 2
    pack = Path(args.pack)
    if not pack.is_dir() and not zipfile.is_zipfile(pack):
        print(f"error: {pack}: not a folder or a zip file", file=sys.stderr)
        return 2
    into = args.into
    if into is None:
        try:
            into = load_config().rules[0] / "sigma"
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    report = import_pack(pack, into, statuses, args.min_level, args.mapping)
    for skipped in report.skipped:
        print(f"{pack}/{skipped.path}: skipped ({skipped.kind}): {skipped.reason}")
    kinds = Counter(s.kind for s in report.skipped)
    left_out = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none"
    uncovered = sum(1 for w in report.warnings if "not covered by any mapping" in w.message)
    print(f"{len(report.imported) + len(report.skipped)} rule files: {len(report.imported)} imported into {into}; "
          f"skipped: {left_out}; {len(report.warnings)} warnings ({uncovered} rules whose logsource no mapping "
          f"covers; `opmas rules validate {into}` lists them)")
    return 0 if report.imported else 1


def reload_command(args: argparse.Namespace) -> int:
    """Send a reload request on opmas.engine.reload; print the engine's answer; exit 1 if refused."""
    import asyncio

    import nats.errors

    from opmas.connectors.nats.control import request_reload
    from opmas.config import load_config
    from opmas.runtime.nats_access import nats_options

    config = load_config()
    url = args.nats or config.client_nats_url()
    try:
        answer = asyncio.run(request_reload(url, options=nats_options(config)))
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
