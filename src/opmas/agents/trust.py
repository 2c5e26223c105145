"""Which server an agent trusts: a CA file it was given, or the CA it pinned at enrollment.

Pinning: the agent is given the SHA-256 fingerprint of OPMAS's CA (printed by ``opmas up``; setting
``agent.ca_fingerprint``), fetches the CA from the API (``GET /api/v1/tls/ca``, public: only its
fingerprint makes it trusted), keeps it beside its credentials (0600) once the fingerprint matches,
and from then on verifies the API (HTTPS, WSS) and NATS (TLS) against it alone.
"""
from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from opmas.credentials import write_private
from opmas.runtime.tls import client_context

MAX_CA_BYTES = 64 * 1024


class UntrustedServer(Exception):
    """The server's CA is not the one the agent was told to trust."""


def _hex(fingerprint: str) -> str:
    """A fingerprint as bare lower-case hex (``SHA256:AB:CD...``, ``abcd...`` alike)."""
    return re.sub(r"[^0-9a-f]", "", fingerprint.lower().removeprefix("sha256:"))


def pinned_ca(api_url: str, fingerprint: str, store: Path) -> Path:
    """The CA file at ``store``: kept from an earlier run, else fetched from the API at ``api_url`` and
    kept only if its SHA-256 fingerprint is ``fingerprint`` (UntrustedServer otherwise)."""
    if store.exists():
        return store
    answer = httpx.get(f"{api_url.rstrip('/')}/api/v1/tls/ca", verify=False, timeout=15)  # checked below
    answer.raise_for_status()
    pem = answer.content[:MAX_CA_BYTES]
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise UntrustedServer(f"{api_url} served no CA certificate") from exc
    if cert.fingerprint(hashes.SHA256()).hex() != _hex(fingerprint):
        raise UntrustedServer(f"the CA {api_url} serves is not the one of fingerprint {fingerprint}")
    store.parent.mkdir(parents=True, exist_ok=True)
    write_private(store, pem)
    return store


def agent_tls(api_url: str, ca_file: Path | None, fingerprint: str | None, store: Path | None) -> ssl.SSLContext | None:
    """What the agent trusts: ``ca_file``; else the CA pinned by ``fingerprint`` (kept at ``store``);
    else None (the system's CAs)."""
    if ca_file is not None:
        return client_context(ca_file)
    if fingerprint and store is not None:
        return client_context(pinned_ca(api_url, fingerprint, store))
    return None
