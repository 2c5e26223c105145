"""NATS JWTs (nats-io/jwt v2): Ed25519 nkeys, encoding and decoding, the claims of auth callout.

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` with the header
``{"typ":"JWT","alg":"ed25519-nkey"}``; the signature is Ed25519 over the first two parts, by the
key named in ``iss``. ``jti`` is, as the Go library computes it, the unpadded base32 of the
SHA-512/256 of the JSON of the standard claims (``aud exp jti iat iss name nbf sub``, ``jti``
empty). The NATS-specific part is under ``nats`` with its ``type`` and ``version`` (2).

Keys are nkeys (PyPI ``nkeys``): a seed ``S...`` and a public key whose first letter says its
role (``A`` account, ``U`` user, ``N`` server). ``nkeys`` cannot make a key or verify with a
public key alone: :func:`create_keypair` and :func:`verify_with_public_key` do.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

ALGORITHM = "ed25519-nkey"
HEADER = {"typ": "JWT", "alg": ALGORITHM}
USER_CLAIM = "user"
AUTHORIZATION_REQUEST_CLAIM = "authorization_request"
AUTHORIZATION_RESPONSE_CLAIM = "authorization_response"
AUTHORIZATION_REQUEST_AUDIENCE = "nats-authorization-request"
LIB_VERSION = 2
NO_LIMIT = -1

PREFIX_ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
PREFIX_USER = nkeys.PREFIX_BYTE_USER
PREFIX_SERVER = nkeys.PREFIX_BYTE_SERVER
_ROLE_LETTER = {PREFIX_ACCOUNT: "A", PREFIX_USER: "U", PREFIX_SERVER: "N",
                nkeys.PREFIX_BYTE_OPERATOR: "O", nkeys.PREFIX_BYTE_CLUSTER: "C"}
_STANDARD = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")  # Go's ClaimsData, in its order


class JWTError(ValueError):
    """A token that is malformed, not signed by its issuer, of the wrong kind or expired."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- keys ---------------------------------------------------------------------------------

def create_keypair(prefix: int = PREFIX_ACCOUNT) -> nkeys.KeyPair:
    """A new random nkey pair of a role (``PREFIX_ACCOUNT``, ``PREFIX_USER``, ...)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(keypair: nkeys.KeyPair) -> str:
    return keypair.public_key.decode()


def decode_public_key(key: str, prefix: int | None = None) -> bytes:
    """The raw Ed25519 key of an encoded public nkey, checking its checksum and (given) its role."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError) as exc:
        raise JWTError(f"not an nkey: {key!r}") from exc
    if len(raw) != 35:
        raise JWTError(f"not a public nkey: {key!r}")
    body, checksum = raw[:-2], raw[-2:]
    if nkeys.crc16(bytearray(body)).to_bytes(2, "little") != checksum:
        raise JWTError(f"bad nkey checksum: {key!r}")
    if not nkeys.valid_public_prefix_byte(body[0]) or (prefix is not None and body[0] != prefix):
        raise JWTError(f"nkey of the wrong role: {key!r}")
    return bytes(body[1:])


def is_public_key(key: str, prefix: int | None = None) -> bool:
    try:
        decode_public_key(key, prefix)
    except JWTError:
        return False
    return True


def verify_with_public_key(key: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature of ``data``."""
    try:
        nacl.signing.VerifyKey(decode_public_key(key)).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, JWTError):
        return False
    return True


# -- tokens -------------------------------------------------------------------------------

def claims_id(claims: dict[str, Any]) -> str:
    """``jti`` as nats-io/jwt v2 computes it: base32 (no padding) of the SHA-512/256 of the JSON of
    the standard claims with an empty ``jti`` (Go omits empty fields)."""
    data = {k: claims[k] for k in _STANDARD if k != "jti" and claims.get(k) not in (None, "", 0)}
    digest = hashlib.new("sha512_256", json.dumps(data, separators=(",", ":")).encode()).digest()
    return base64.b32encode(digest).rstrip(b"=").decode()


def encode(claims: dict[str, Any], keypair: nkeys.KeyPair, now: float | None = None) -> str:
    """Sign ``claims`` (``sub`` required; ``iss``, ``iat`` and ``jti`` are set here) with ``keypair``."""
    if not claims.get("sub"):
        raise JWTError("subject is not set")
    claims = dict(claims)
    claims["iss"] = public_key(keypair)
    claims["iat"] = int(now if now is not None else time.time())
    claims.pop("jti", None)
    claims["jti"] = claims_id(claims)
    ordered = {k: claims[k] for k in _STANDARD if claims.get(k) not in (None, "", 0)}
    ordered.update({k: v for k, v in claims.items() if k not in _STANDARD})
    signing_input = (_b64encode(json.dumps(HEADER, separators=(",", ":")).encode()) + "."
                     + _b64encode(json.dumps(ordered, separators=(",", ":")).encode()))
    return signing_input + "." + _b64encode(keypair.sign(signing_input.encode()))


def decode(token: str, issuer: str | None = None, claim_type: str | None = None,
           now: float | None = None) -> dict[str, Any]:
    """The claims of ``token`` once its signature by its ``iss`` is checked, and given, that the
    issuer is ``issuer`` and ``nats.type`` is ``claim_type``; expiry and ``nbf`` are checked too.
    :class:`JWTError` saying why otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JWTError("a JWT has three parts")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise JWTError(f"malformed JWT: {exc}") from exc
    if not isinstance(header, dict) or header.get("typ", "").upper() != "JWT" or header.get("alg") != ALGORITHM:
        raise JWTError(f"unsupported JWT header: {header!r}")
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise JWTError("claims without an issuer")
    if issuer is not None and claims["iss"] != issuer:
        raise JWTError(f"issued by {claims['iss']}, not {issuer}")
    if not verify_with_public_key(claims["iss"], f"{parts[0]}.{parts[1]}".encode(), signature):
        raise JWTError("bad signature")
    nats = claims.get("nats")
    if claim_type is not None and (not isinstance(nats, dict) or nats.get("type") != claim_type):
        raise JWTError(f"not a {claim_type} JWT")
    now = now if now is not None else time.time()
    if claims.get("exp") and now > claims["exp"]:
        raise JWTError("expired")
    if claims.get("nbf") and claims["nbf"] > now:
        raise JWTError("not yet valid")
    return claims


# -- auth callout claims ------------------------------------------------------------------

def user_claims(user_nkey: str, account: str, name: str, publish: list[str] | None,
                subscribe: list[str] | None, expires: int | None = None,
                allow_responses: bool = False) -> dict[str, Any]:
    """The claims of a user JWT: subject ``user_nkey``, placed in ``account`` (``aud``; in a server
    configured without operator, the account's name), allowed to publish / subscribe only the given
    subjects (``None``: everything), expiring at ``expires`` (epoch seconds)."""
    permissions: dict[str, Any] = {}
    if publish is not None:
        permissions["pub"] = {"allow": list(publish)} if publish else {"deny": [">"]}
    if subscribe is not None:
        permissions["sub"] = {"allow": list(subscribe)} if subscribe else {"deny": [">"]}
    if allow_responses:
        permissions["resp"] = {"max": 1, "ttl": 0}
    claims: dict[str, Any] = {
        "aud": account, "name": name, "sub": user_nkey,
        "nats": {**permissions, "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
                 "type": USER_CLAIM, "version": LIB_VERSION},
    }
    if expires:
        claims["exp"] = int(expires)
    return claims


def authorization_response_claims(user_nkey: str, server_id: str, jwt: str | None = None,
                                  error: str | None = None) -> dict[str, Any]:
    """The claims of an auth callout's answer to the server ``server_id`` about ``user_nkey``:
    either the user ``jwt`` or an ``error``."""
    if (jwt is None) == (error is None):
        raise ValueError("either a jwt or an error")
    nats: dict[str, Any] = {"jwt": jwt} if jwt is not None else {"error": error}
    nats.update(type=AUTHORIZATION_RESPONSE_CLAIM, version=LIB_VERSION)
    return {"aud": server_id, "sub": user_nkey, "nats": nats}
