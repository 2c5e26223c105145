"""The ``opmas`` command. Each module of this package that defines ``register(subparsers)`` adds its
sub-commands; the others are helpers of those commands."""
from __future__ import annotations

import argparse
import importlib

COMMANDS = ("agent", "api", "db", "detect", "hunt", "replay", "rules", "up", "worker")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="opmas", description="OPMAS security stream processing")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse and run; the sub-command's ``func(args)`` returns the exit code."""
    args = build_parser().parse_args(argv)
    code = args.func(args)
    return int(code or 0)
