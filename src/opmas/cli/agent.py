"""``opmas agent tail FILE...`` and ``opmas agent syslog --port N``: the shipped agents;
``opmas agent enroll``: the enrollment string that a new agent's first run is given."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import httpx

    from opmas.agents.sdk import AgentSettings, SecurityAgent


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("agent", help="run an agent (file tailer, syslog receiver), or enroll one")
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
    enroll = sub.add_parser("enroll", help="print an enrollment string for new agents: a token (agents:register), "
                                           "where the API and NATS are, and the CA's fingerprint")
    enroll.add_argument("--config", type=Path, help="YAML configuration file (the same as opmas up's)")
    enroll.add_argument("--management-url", help="the API this command calls (default: as for the agents)")
    enroll.add_argument("--principal", default="admin",
                        help="who makes the token (needs principals:admin); its secret is read from OPMAS_SECRET, "
                             "else asked on the terminal")
    enroll.add_argument("--ttl", type=float, default=86400.0, help="seconds the token stays valid (default one day)")
    enroll.add_argument("--agent-api-url", help="the API URL the agents reach (default: --management-url's)")
    enroll.add_argument("--agent-nats-url", help="the NATS URL the agents reach (default: this machine's)")
    enroll.set_defaults(func=enroll_command)


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
    from opmas.agents.enrollment import Enrollment, read_enrollment
    from opmas.agents.sdk import AgentSettings
    from opmas.config import load_config

    config = load_config(args.config)
    args.log_level = args.log_level or config.log_level
    given = read_enrollment(config.agent.enroll_token) if config.agent.enroll_token else Enrollment(token="")
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.name)
    fingerprint = config.agent.ca_fingerprint or given.ca_fingerprint
    return AgentSettings(management_url=args.management_url or config.agent.api_url or given.api_url
                         or config.client_api_url(),
                         nats_url=args.nats_url or config.nats.url or given.nats_url or config.client_nats_url(),
                         name=args.name, type=kind, agent_id=args.agent_id, enroll_token=given.token or None,
                         credentials_file=args.credentials or config.data_dir / "agents" / f"{safe_name}.json",
                         ca_file=None if fingerprint else config.trusted_ca, ca_fingerprint=fingerprint)


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


def enroll_command(args: argparse.Namespace) -> int:
    """Make an enrollment principal (``agents:register`` only) and a JWT of it, and print the
    enrollment string: the token, the agents' API and NATS URLs, and the CA's fingerprint."""
    import getpass
    from datetime import datetime, timezone
    from urllib.parse import urlsplit

    import httpx

    from opmas.agents.enrollment import Enrollment
    from opmas.config import is_loopback, load_config
    from opmas.runtime.tls import client_context, fingerprint

    config = load_config(args.config)
    api_url = (args.management_url or config.client_api_url()).rstrip("/")
    secret = os.environ.get("OPMAS_SECRET")
    if not secret and sys.stdin.isatty():
        secret = getpass.getpass(f"secret of principal {args.principal}: ")
    if not secret:
        print("error: give the principal's secret in OPMAS_SECRET (or run on a terminal to be asked)",
              file=sys.stderr)
        return 2
    ca = config.trusted_ca if api_url.startswith("https://") else None
    try:
        with httpx.Client(base_url=f"{api_url}/api/v1", timeout=30,
                          verify=client_context(ca) if ca else True) as api:
            admin = _answer(api.post("/auth/token", json={"principal_id": args.principal, "secret": secret}))
            made = _answer(api.post("/principals", headers={"Authorization": f"Bearer {admin['access_token']}"},
                                    json={"name": f"enrollment {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}Z",
                                          "permissions": ["agents:register"]}))
            token = _answer(api.post("/auth/token", json={"principal_id": made["id"], "secret": made["secret"],
                                                          "ttl": args.ttl}))
    except (httpx.HTTPError, RuntimeError) as exc:
        print(f"error: {api_url}: {exc}", file=sys.stderr)
        return 2
    enrollment = Enrollment(token=token["access_token"], api_url=args.agent_api_url or api_url,
                            nats_url=args.agent_nats_url or config.client_nats_url(),
                            ca_fingerprint=fingerprint(ca) if ca else None)
    print(enrollment.encode())
    print(f"enrollment string for agents, valid until {token['expires_at']}: set it as OPMAS_ENROLL_TOKEN on the "
          f"agent's machine (environment or configuration file, never a flag).\n"
          f"  API {enrollment.api_url}, NATS {enrollment.nats_url}, CA {enrollment.ca_fingerprint or 'not pinned'}\n"
          f"  revoke it before then: DELETE /api/v1/principals/{made['id']}", file=sys.stderr)
    if any(is_loopback(urlsplit(url).hostname or "") for url in (enrollment.api_url, enrollment.nats_url)):
        print("  these URLs are this machine's own: for agents elsewhere give --agent-api-url and --agent-nats-url",
              file=sys.stderr)
    return 0


def _answer(response: httpx.Response) -> dict:
    """The JSON of a successful API answer; RuntimeError with the API's own words otherwise."""
    if response.is_error:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                           f"{response.text[:500]}")
    return response.json()
