"""The servers the pipeline talks to: embedded under the data dir unless a URL is configured."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.config import Config
from opmas.runtime.datadir import lock_data_dir, make_private
from opmas.runtime.embedded import NATS_PAYLOAD_LIMIT, start_nats, start_postgres
from opmas.runtime.nats_access import EmbeddedNatsAuth, auth_dir
from opmas.runtime.supervise import Server
from opmas.runtime.tls import ServerTls, server_tls

log = logging.getLogger("opmas.stack")


@dataclass
class Stack:
    """Where NATS, PostgreSQL and the archive are, and how to stop what was started here."""

    nats_url: str
    db_url: str
    archive: Archive
    archive_location: str
    tls: ServerTls | None = None  # the listeners' TLS files (None: plaintext on loopback)
    nats_auth: EmbeddedNatsAuth | None = None  # the embedded NATS server's identities
    embedded: list[str] = field(default_factory=list)  # names of the servers started here
    servers: dict[str, Server] = field(default_factory=dict)  # the embedded servers, to supervise
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Close the archive and stop the embedded servers (last started, first stopped)."""
        self.archive.close()
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception:  # keep stopping the others
                log.exception("stopping a server failed")
        self._stops.clear()


def start_stack(config: Config) -> Stack:
    """Take the data dir (DataDirBusy if another ``opmas up`` has it), start the embedded servers
    the configuration leaves without a URL (PortTaken if NATS's port is another program's) and
    connect the archive."""
    lock = lock_data_dir(config.data_dir)
    stops: list[Callable[[], None]] = [lock.close]  # released last
    embedded: list[str] = []
    servers: dict[str, Server] = {}
    try:
        tls = server_tls(config)
        nats_url, nats_auth = config.nats.url, None
        if not nats_url:
            nats_auth = EmbeddedNatsAuth.load_or_create(auth_dir(config))
            nats = start_nats(config.nats_dir, port=config.nats.port, host=config.listen,
                              log_file=config.data_dir / "nats.log",
                              max_payload=min(config.nats.max_message_bytes, NATS_PAYLOAD_LIMIT), tls=tls,
                              authorization=nats_auth.server_config())
            stops.append(nats.stop)
            servers["nats"] = nats
            url_file = config.nats_url_file
            url_file.write_text(nats.url + "\n")
            stops.append(lambda: url_file.unlink(missing_ok=True))
            embedded.append("nats")
            nats_url = nats.url
        db_url = config.postgres.url
        if not db_url:
            postgres = start_postgres(config.postgres_dir)
            stops.append(postgres.stop)
            servers["postgres"] = postgres
            embedded.append("postgres")
            db_url = postgres.url
        archive = Archive(connect(config.clickhouse.url, config.clickhouse_dir))
        location = config.clickhouse.url or f"chdb://{config.clickhouse_dir}"
        if not config.clickhouse.url:
            embedded.append("clickhouse")
        # PostgreSQL run as another user (as root) has just opened the data dir to it: search only
        make_private(config.data_dir, traversable="postgres" in servers and servers["postgres"].user is not None)
    except BaseException:
        for stop in reversed(stops):
            stop()
        raise
    return Stack(nats_url, db_url, archive, location, tls, nats_auth, embedded, servers, stops)
