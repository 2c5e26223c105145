"""Connecting a test to the embedded NATS server of an ``opmas up`` (authentication is always on):
as OPMAS's own service identity, generated under the data dir."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from opmas.config import load_config
from opmas.runtime.nats_access import nats_options


def service_options(data_dir: Path) -> dict[str, Any]:
    """``nats.connect`` options of the service identity (and TLS trust) of ``data_dir``'s server."""
    return nats_options(load_config(env={"OPMAS_DATA_DIR": str(data_dir)}))
