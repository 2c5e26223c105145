"""``opmas api``: the management API alone (on configured NATS and PostgreSQL);
``opmas api nats-auth``: the nats-server authorization block for the registered agents."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api", help="run the management API alone (needs NATS_URL and OPMAS_DB_URL; `opmas up` runs it too)")
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument("--host", help="listen address (default 127.0.0.1, env OPMAS_API_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default 8080, env OPMAS_API_PORT)")
    parser.set_defaults(func=api_command)
    sub = parser.add_subparsers(dest="api_command")
    auth = sub.add_parser("nats-auth", help="print the nats-server authorization block for the registered agents")
    auth.add_argument("--config", type=Path, help="YAML configuration file")
    auth.add_argument("--out", type=Path, help="write it here (mode 0600) instead of printing it")
    auth.set_defaults(func=nats_auth_command)
    callout = sub.add_parser("nats-callout", help="run the NATS auth callout for an external nats-server: agents "
                                                  "authenticated against the registry (docs/nats-auth.md)")
    callout.add_argument("--config", type=Path, help="YAML configuration file")
    callout.add_argument("--print-config", action="store_true",
                         help="print the nats-server configuration fragment (accounts, users, auth_callout) and exit")
    callout.set_defaults(func=nats_callout_command)


def _urls(config_path: Path | None) -> tuple[object, str, str]:
    from opmas.config import ConfigError, load_config

    config = load_config(config_path)
    if not config.postgres.url or not config.nats.url:
        raise ConfigError("the API alone needs OPMAS_DB_URL and NATS_URL (or db_url and nats_url in the "
                          "config file); `opmas up` runs it on the embedded servers")
    return config, config.postgres.url, config.nats.url


def api_command(args: argparse.Namespace) -> int:
    import asyncio

    from opmas.api.service import serve
    from opmas.api.settings import ApiSettings
    from opmas.config import ConfigError
    from opmas.logs import setup_logging
    from opmas.runtime.tls import server_tls

    try:
        config, db_url, nats_url = _urls(args.config)
        settings = ApiSettings.from_config(config, db_url, nats_url, host=args.host, port=args.port,
                                           tls=server_tls(config))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    print(f"management API on {settings.base_url}/api/v1", file=sys.stderr, flush=True)
    asyncio.run(serve(settings))
    return 0


def nats_auth_command(args: argparse.Namespace) -> int:
    import asyncio

    import psycopg

    from opmas.api.nats_auth import authorization_from_db
    from opmas.config import ConfigError

    password = os.environ.get("OPMAS_NATS_SERVICE_PASSWORD")
    try:
        _, db_url, _ = _urls(args.config)
        if not password:
            raise ConfigError("set OPMAS_NATS_SERVICE_PASSWORD: the password of the OPMAS services' NATS user "
                              "'opmas' (put it in their NATS_URL: nats://opmas:<password>@host:4222)")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def render() -> str:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            return await authorization_from_db(conn, password)

    text = asyncio.run(render())
    if args.out:
        args.out.touch(mode=0o600)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def nats_callout_command(args: argparse.Namespace) -> int:
    """Print the server's configuration fragment, or run the callout until SIGINT/SIGTERM. The three
    identities' passwords come from the configuration (environment), never from the command line."""
    import asyncio
    import signal

    from opmas.config import ConfigError
    from opmas.connectors.nats.auth_callout import CALLOUT_USER, callout_config, load_or_create_keys
    from opmas.credentials import hash_secret
    from opmas.logs import setup_logging
    from opmas.runtime.nats_access import SERVICE_USER, SYSTEM_USER, auth_dir, run_callout
    from opmas.runtime.tls import client_tls

    try:
        config, db_url, nats_url = _urls(args.config)
        passwords = {SERVICE_USER: config.nats.password, CALLOUT_USER: config.nats.callout_password,
                     SYSTEM_USER: config.nats.system_password}
        missing = [name for name, value in (("NATS_PASSWORD", passwords[SERVICE_USER]),
                                             ("OPMAS_NATS_CALLOUT_PASSWORD", passwords[CALLOUT_USER]),
                                             ("OPMAS_NATS_SYSTEM_PASSWORD", passwords[SYSTEM_USER])) if not value]
        if missing or (config.nats.user or SERVICE_USER) != SERVICE_USER:
            raise ConfigError(f"the callout needs NATS_USER={SERVICE_USER} (or unset) and the passwords of its "
                              f"three identities; missing: {', '.join(missing) or 'none'}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = load_or_create_keys(auth_dir(config))
    if args.print_config:
        hashed = {user: hash_secret(password) for user, password in passwords.items()}
        sys.stdout.write(callout_config(keys.issuer_public_key, SERVICE_USER, hashed[SERVICE_USER], SYSTEM_USER,
                                        hashed[SYSTEM_USER], callout_password=hashed[CALLOUT_USER]))
        return 0
    setup_logging(config.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        print(f"auth callout for {nats_url} (issuer {keys.issuer_public_key})", file=sys.stderr, flush=True)
        await run_callout(nats_url, client_tls(config), keys, passwords, db_url, stop)

    asyncio.run(run())
    return 0
