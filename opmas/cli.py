"""The ``opmas`` command. Each module in ``opmas.commands`` adds its sub-commands."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import opmas.commands


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="opmas", description="OPMAS security stream processing")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(opmas.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"opmas.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse and run; the sub-command's ``func(args)`` returns the exit code."""
    args = build_parser().parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
