"""TLS on the hops that leave the machine (issue 15): the local CA's files, the embedded NATS server's
TLS-only client port, and the API over HTTPS and WSS, with real servers."""
from __future__ import annotations

import asyncio
import socket
import stat

import httpx
import nats
import orjson
import pytest
from websockets.sync.client import connect as ws_connect

from opmas.config import load_config
from opmas.runtime.embedded import start_nats
from opmas.runtime.tls import CA_FILE, client_context, fingerprint, local_server_tls, \
    server_tls
from tests.integration.apiserver import ADMIN_SECRET, ApiServer, api_settings

NAMES = ("localhost", "127.0.0.1")


def test_the_local_ca_is_made_once_private_and_reissues_for_new_names(tmp_path):
    first = local_server_tls(tmp_path / "tls", NAMES)
    files = [first.ca, first.cert, first.key, tmp_path / "tls" / "ca-key.pem"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    before = {f: f.read_bytes() for f in files}
    again = local_server_tls(tmp_path / "tls", NAMES)
    assert {f: f.read_bytes() for f in files} == before and again.fingerprint == first.fingerprint  # reused
    wider = local_server_tls(tmp_path / "tls", (*NAMES, "opmas.example.org"))
    assert wider.cert.read_bytes() != before[first.cert]  # a new server certificate for the new name
    assert wider.ca.read_bytes() == before[first.ca]  # by the same CA
    assert fingerprint(wider.ca).startswith("SHA256:") and len(fingerprint(wider.ca)) == 7 + 32 * 3 - 1


def test_tls_is_on_beyond_loopback_and_one_setting_away_on_it(tmp_path):
    env = {"OPMAS_DATA_DIR": str(tmp_path)}
    assert server_tls(load_config(env=env)) is None
    assert load_config(env=env | {"OPMAS_LISTEN": "0.0.0.0"}).tls_on
    assert not load_config(env=env | {"OPMAS_LISTEN": "0.0.0.0", "OPMAS_TLS": "off"}).tls_on
    on = load_config(env=env | {"OPMAS_TLS": "on"})
    tls = server_tls(on)
    assert tls is not None and tls.ca == tmp_path / "tls" / CA_FILE
    assert on.client_api_url().startswith("https://") and on.client_nats_url().startswith("tls://")


@pytest.fixture
def tls_nats(tmp_path):
    tls = local_server_tls(tmp_path / "tls", NAMES)
    server = start_nats(tmp_path / "nats", tls=tls)
    yield server, tls
    server.stop()


async def _relay(target_port: int, seen: bytearray) -> tuple[asyncio.AbstractServer, int]:
    """A TCP relay to 127.0.0.1:``target_port`` that keeps every byte it carries in ``seen``."""
    async def pipe(reader, writer):
        while data := await reader.read(65536):
            seen.extend(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                             return_exceptions=True)

    relay = await asyncio.start_server(handle, "127.0.0.1", 0)
    return relay, relay.sockets[0].getsockname()[1]


async def test_nats_speaks_tls_only_and_a_relay_sees_no_event(tls_nats, tmp_path):
    server, tls = tls_nats
    assert server.url.startswith("tls://")
    seen = bytearray()
    relay, relay_port = await _relay(server.port, seen)
    receiver = await nats.connect(server.url, tls=client_context(tls.ca))
    sub = await receiver.subscribe("opmas.events.a1")
    await receiver.flush()
    sender = await nats.connect(f"tls://127.0.0.1:{relay_port}", tls=client_context(tls.ca))
    secret = b'{"message": "Failed password for root from 198.51.100.7 marker-5f3a"}'
    await sender.publish("opmas.events.a1", secret)
    await sender.flush()
    assert (await sub.next_msg(timeout=5)).data == secret
    assert b"marker-5f3a" not in seen and b"opmas.events" not in seen and len(seen) > len(secret)
    await sub.unsubscribe()
    for client in (sender, receiver):
        await client.close()
    relay.close()

    other = local_server_tls(tmp_path / "other-ca", NAMES)  # a client that trusts another CA: refused
    with pytest.raises(Exception):
        await nats.connect(server.url, tls=client_context(other.ca), max_reconnect_attempts=0, connect_timeout=3,
                           allow_reconnect=False)


def test_a_plaintext_client_is_refused(tls_nats):
    server, _ = tls_nats
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
        info = plain.recv(4096)
        assert info.startswith(b"INFO") and orjson.loads(info[5:].strip())["tls_required"]
        plain.sendall(b'CONNECT {"verbose":false}\r\nPUB opmas.events.a1 5\r\nhello\r\nPING\r\n')
        answer = b""
        try:
            while chunk := plain.recv(4096):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"PONG" not in answer  # closed without taking a command


def test_the_api_serves_https_and_wss_only(tls_nats, postgres, tmp_path):
    nats_server, tls = tls_nats
    settings = api_settings(postgres.url, nats_server.url, tmp_path / "data", tls=tls,
                            nats_options={"tls": client_context(tls.ca)})
    api = ApiServer(settings).start()
    try:
        base = f"https://127.0.0.1:{settings.port}/api/v1"
        trusted = client_context(tls.ca)
        token = httpx.post(f"{base}/auth/token", json={"principal_id": "admin", "secret": ADMIN_SECRET},
                           verify=trusted).json()["access_token"]
        me = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {token}"}, verify=trusted)
        assert me.status_code == 200 and me.json()["id"] == "admin"
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{settings.port}/api/v1/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # the system's CAs do not know the local CA
            httpx.get(f"{base}/health", timeout=5)
        with ws_connect(f"wss://127.0.0.1:{settings.port}/api/v1/ws/findings", ssl=trusted) as ws:
            ws.send(orjson.dumps({"token": token}).decode())
            assert "subscribed" in orjson.loads(ws.recv(10))
    finally:
        api.stop()
