"""The enrollment string ``opmas agent enroll`` prints: one value that gives a new agent everything
its first run needs, so it is set once (``OPMAS_ENROLL_TOKEN``) and never on a command line.

It carries the enrollment JWT (``agents:register``), where the agent reaches the API and NATS, and
the SHA-256 fingerprint of OPMAS's CA, so that the agent trusts exactly that CA. The token alone
(a bare JWT) is accepted where the string is, as before.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass

import orjson

PREFIX = "opmas-enroll:"
MAX_LENGTH = 16 * 1024


class EnrollmentError(ValueError):
    """An enrollment string that cannot be read."""


@dataclass(frozen=True)
class Enrollment:
    """What an agent's first run is given."""

    token: str
    api_url: str | None = None
    nats_url: str | None = None
    ca_fingerprint: str | None = None

    def encode(self) -> str:
        """The one-line string (``opmas-enroll:`` and base64url JSON)."""
        body = orjson.dumps({k: v for k, v in asdict(self).items() if v is not None})
        return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def read_enrollment(value: str) -> Enrollment:
    """An enrollment string, or a bare JWT (the token alone)."""
    value = value.strip()
    if len(value) > MAX_LENGTH:
        raise EnrollmentError(f"enrollment token longer than {MAX_LENGTH} characters")
    if not value.startswith(PREFIX):
        return Enrollment(token=value)
    encoded = value.removeprefix(PREFIX)
    try:
        fields = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise EnrollmentError(f"the enrollment string is damaged (copy it whole): {exc}") from None
    known = {"token", "api_url", "nats_url", "ca_fingerprint"}
    if (not isinstance(fields, dict) or not isinstance(fields.get("token"), str)
            or not all(k in known and isinstance(v, str) for k, v in fields.items())):
        raise EnrollmentError(f"the enrollment string must hold a token and only {sorted(known)}, as text")
    return Enrollment(**fields)
