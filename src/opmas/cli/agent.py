"""``opmas agent tail FILE...`` and ``opmas agent syslog --port N``: the shipped agents."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from opmas.agents.sdk import AgentSettings, SecurityAgent


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("agent", help="run an agent (file tailer, syslog receiver)")
    sub = parser.add_subparsers(dest="agent_kind", required=True)
    tail = sub.add_parser("tail", help="follow log files (through rotation) and publish their lines")
    tail.add_argument("files", nargs="+", type=Path, metavar="FILE")
    tail.add_argument("--format", choices=["auto", "json", "syslog"], default="auto")
    tail.add_argument("--from-beginning", action="store_true", help="read the files from their start")
    tail.add_argument("--allow-dir", action="append", type=Path, metavar="DIR",
                      help="repeatable: management may point tail.paths only at files under these "
                           "(default: the directories of FILE...)")
    _common(tail, "tail")
    tail.set_defaults(func=tail_command)
    syslog = sub.add_parser("syslog", help="receive syslog (RFC 3164/5424) over UDP and TCP")
    syslog.add_argument("--host", default="0.0.0.0")
    syslog.add_argument("--port", type=int, default=5514)
    syslog.add_argument("--protocol", action="append", choices=["udp", "tcp"],
                        help="repeatable; default both")
    _common(syslog, "syslog")
    syslog.set_defaults(func=syslog_command)


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file (the same as opmas up's)")
    parser.add_argument("--management-url", help="management API (default: agent.api_url, else this machine's "
                                                 "API from api.host/api.port; env OPMAS_API_URL)")
    parser.add_argument("--nats-url", help="NATS (default: NATS_URL, else the running opmas up's of the data dir)")
    parser.add_argument("--name", default=f"{kind}@{os.uname().nodename}")
    parser.add_argument("--id", dest="agent_id", help="agent id (default: assigned at registration)")
    parser.add_argument("--credentials", type=Path,
                        help="where the agent keeps its credentials (default <data dir>/agents/<name>.json)")
    parser.add_argument("--log-level", help="default: log_level of the configuration")


def _settings(args: argparse.Namespace, kind: str) -> AgentSettings:
    """The agent's settings: the configuration tree (file, environment) under its flags. The
    enrollment token is read from the configuration (OPMAS_ENROLL_TOKEN), never from a flag:
    command lines show up in ``ps``."""
    from opmas.agents.sdk import AgentSettings
    from opmas.config import load_config

    config = load_config(args.config)
    args.log_level = args.log_level or config.log_level
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.name)
    return AgentSettings(management_url=args.management_url or config.client_api_url(),
                         nats_url=args.nats_url or config.client_nats_url(), name=args.name, type=kind,
                         agent_id=args.agent_id, enroll_token=config.agent.enroll_token,
                         credentials_file=args.credentials or config.data_dir / "agents" / f"{safe_name}.json",
                         ca_file=None if config.agent.ca_fingerprint else config.trusted_ca,
                         ca_fingerprint=config.agent.ca_fingerprint)


def _run(agent: SecurityAgent, level: str) -> int:
    import asyncio

    from opmas.agents.sdk import AgentError, run_until_signalled
    from opmas.logs import setup_logging

    setup_logging(level)
    try:
        asyncio.run(run_until_signalled(agent))
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def tail_command(args: argparse.Namespace) -> int:
    from opmas.agents.tail import TailAgent

    agent = TailAgent(_settings(args, "tail"), [p.resolve() for p in args.files], allow_dirs=args.allow_dir,
                      format=args.format, from_beginning=args.from_beginning)
    return _run(agent, args.log_level)


def syslog_command(args: argparse.Namespace) -> int:
    from opmas.agents.syslog import SyslogAgent

    agent = SyslogAgent(_settings(args, "syslog"), host=args.host, port=args.port,
                        protocols=args.protocol or ["udp", "tcp"])
    return _run(agent, args.log_level)
