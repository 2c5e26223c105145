"""What the API's request handlers share: settings, the database pool, NATS, the token issuer."""
from __future__ import annotations

from dataclasses import dataclass, field

import nats.aio.client
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from opmas.api.auth import TokenIssuer
from opmas.api.event_archive import EventArchive
from opmas.api.hunts import Hunts
from opmas.api.limits import TokenGuard
from opmas.api.settings import ApiSettings


@dataclass
class ApiState:
    settings: ApiSettings
    pool: AsyncConnectionPool
    nc: nats.aio.client.Client
    js: JetStreamContext
    issuer: TokenIssuer
    archive: EventArchive | None = None  # every raw event; None: the API reads PostgreSQL only
    token_guard: TokenGuard = field(default_factory=lambda: TokenGuard(0, 0))  # POST /auth/token's limits
    hunts: Hunts = field(default_factory=Hunts)  # the retro-hunts this process runs
