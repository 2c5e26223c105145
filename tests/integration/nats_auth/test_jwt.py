"""NATS JWTs: signed and checked with nkeys as nats-io/jwt v2 does (the server accepting them is
tested in test_auth_callout.py), and the callout ignoring requests that are not a server's."""
from __future__ import annotations

import base64
import hashlib
import json

import pytest

from opmas.connectors.nats import jwt as natsjwt
from opmas.connectors.nats.auth_callout import AuthCalloutService, CalloutKeys


def _parts(token: str) -> tuple[dict, dict]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(body)))


def test_encode_decode_round_trip():
    account = natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT)
    user = natsjwt.public_key(natsjwt.create_keypair(natsjwt.PREFIX_USER))
    token = natsjwt.encode(natsjwt.user_claims(user, "OPMAS", "agent-1", ["opmas.events.agent-1"],
                                               ["opmas.control.agent-1"], expires=2_000_000_000),
                           account, now=1_700_000_000)
    header, claims = _parts(token)
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert claims["iss"] == natsjwt.public_key(account) and claims["iss"].startswith("A")
    assert claims["sub"] == user and user.startswith("U")
    assert (claims["iat"], claims["exp"]) == (1_700_000_000, 2_000_000_000)
    assert (claims["aud"], claims["name"]) == ("OPMAS", "agent-1")
    assert claims["nats"]["pub"] == {"allow": ["opmas.events.agent-1"]}
    assert claims["nats"]["sub"] == {"allow": ["opmas.control.agent-1"]}
    assert (claims["nats"]["type"], claims["nats"]["version"]) == ("user", 2)
    # jti: base32 of the SHA-512/256 of the standard claims without jti, in Go's field order
    standard = {k: claims[k] for k in ("aud", "exp", "iat", "iss", "name", "sub")}
    digest = hashlib.new("sha512_256", json.dumps(standard, separators=(",", ":")).encode()).digest()
    assert claims["jti"] == base64.b32encode(digest).decode().rstrip("=")
    assert natsjwt.decode(token, issuer=claims["iss"], claim_type="user", now=1_800_000_000) == claims


def test_decode_refuses_what_does_not_verify():
    account = natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT)
    other = natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT)
    token = natsjwt.encode({"sub": "x", "exp": 2_000_000_000, "nats": {"type": "user"}}, account)
    head, body, sig = token.split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps(
        {**_parts(token)[1], "sub": "y"}).encode()).decode().rstrip("=")
    with pytest.raises(natsjwt.JWTError, match="signature"):
        natsjwt.decode(f"{head}.{forged_body}.{sig}")
    other_iss = base64.urlsafe_b64encode(json.dumps(
        {**_parts(token)[1], "iss": natsjwt.public_key(other)}).encode()).decode().rstrip("=")
    with pytest.raises(natsjwt.JWTError, match="signature"):  # names another key as its issuer
        natsjwt.decode(f"{head}.{other_iss}.{sig}")
    with pytest.raises(natsjwt.JWTError, match="issued by"):
        natsjwt.decode(token, issuer=natsjwt.public_key(other))
    with pytest.raises(natsjwt.JWTError, match="not a authorization_request"):
        natsjwt.decode(token, claim_type=natsjwt.AUTHORIZATION_REQUEST_CLAIM)
    with pytest.raises(natsjwt.JWTError, match="expired"):
        natsjwt.decode(token, now=2_000_000_001)
    with pytest.raises(natsjwt.JWTError):
        natsjwt.decode("not.a.jwt")
    assert natsjwt.decode(token)["sub"] == "x"


def test_public_keys_are_checked():
    key = natsjwt.public_key(natsjwt.create_keypair(natsjwt.PREFIX_SERVER))
    assert natsjwt.is_public_key(key, natsjwt.PREFIX_SERVER)
    assert not natsjwt.is_public_key(key, natsjwt.PREFIX_ACCOUNT)
    assert not natsjwt.is_public_key(key[:-1] + ("A" if key[-1] != "A" else "B"))  # checksum
    assert not natsjwt.is_public_key("hello")


def _request(signer, server_id: str, user_nkey: str, user="agent-1", password="secret") -> str:
    return natsjwt.encode({
        "aud": natsjwt.AUTHORIZATION_REQUEST_AUDIENCE, "sub": "AISSUER", "exp": 2_000_000_000,
        "nats": {"server_id": {"id": server_id, "name": "n", "host": "h"}, "user_nkey": user_nkey,
                 "client_info": {"host": "127.0.0.1", "id": 5},
                 "connect_opts": {"user": user, "pass": password, "protocol": 1},
                 "type": natsjwt.AUTHORIZATION_REQUEST_CLAIM, "version": 2}}, signer)


async def test_the_callout_answers_only_server_requests(tmp_path):
    async def lookup(agent_id):
        return None

    issuer = natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT)
    service = AuthCalloutService(None, CalloutKeys(issuer, tmp_path / "k"), lookup)
    server = natsjwt.create_keypair(natsjwt.PREFIX_SERVER)
    server_id = natsjwt.public_key(server)
    user_nkey = natsjwt.public_key(natsjwt.create_keypair(natsjwt.PREFIX_USER))

    answer = await service.respond(_request(server, server_id, user_nkey))
    claims = natsjwt.decode(answer, issuer=natsjwt.public_key(issuer), claim_type=natsjwt.AUTHORIZATION_RESPONSE_CLAIM)
    assert (claims["aud"], claims["sub"], claims["nats"]["error"]) == (server_id, user_nkey, "unknown agent")
    assert "jwt" not in claims["nats"]

    stranger = natsjwt.create_keypair(natsjwt.PREFIX_SERVER)  # signs, but is not the server named
    assert await service.respond(_request(stranger, server_id, user_nkey)) is None
    account = natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT)  # not a server key at all
    assert await service.respond(_request(account, natsjwt.public_key(account), user_nkey)) is None
    assert await service.respond(_request(server, server_id, "not-a-user-key")) is None
    assert await service.respond("garbage") is None
    assert service.stats == {"allowed": 0, "denied": 1, "invalid": 4}
