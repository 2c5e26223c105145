"""TLS for the hops that leave the machine: the embedded NATS server's client port and the API (HTTPS,
WSS).

Certificates are the user's (``tls.cert``, ``tls.key``, ``tls.ca``) or come from a local CA that
``opmas up`` creates once under the data dir (``tls/``): an ECDSA P-256 CA valid 10 years, and a
server certificate it issues for the configured host names and addresses, issued again when the
names change or it has less than 30 days left. Every file is 0600, the folder 0700. Clients trust
exactly that CA: its SHA-256 fingerprint is printed by ``opmas up`` and carried by enrollment.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opmas.config import Config
from opmas.credentials import write_private

CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
CERT_FILE, KEY_FILE = "server.pem", "server-key.pem"
CA_YEARS, SERVER_DAYS, RENEW_DAYS = 10, 397, 30  # 397 days: what browsers accept of a server certificate
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What a TLS listener needs (certificate chain and key files) and what its clients trust (the CA)."""

    cert: Path
    key: Path
    ca: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.ca)


def fingerprint(ca_file: Path) -> str:
    """SHA-256 of the (first) certificate in ``ca_file``, as hex pairs: ``SHA256:AB:CD:...``."""
    cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def server_names(listen: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names a server certificate covers: loopback, this machine's name, the listen address
    (unless it is a wildcard) and ``extra``, in order, without repeats."""
    names = [*LOOPBACK_NAMES, socket.gethostname()]
    if listen not in ("0.0.0.0", "::", ""):
        names.append(listen)
    names += extra
    return tuple(dict.fromkeys(names))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _local_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The local CA of ``directory``, created on the first call."""
    cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
    if cert_path.exists() and key_path.exists():
        return (x509.load_pem_x509_certificate(cert_path.read_bytes()),
                serialization.load_pem_private_key(key_path.read_bytes(), password=None))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OPMAS"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"OPMAS local CA {socket.gethostname()}"[:64])])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_private(key_path, _key_pem(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _current(cert_path: Path, names: tuple[str, ...], ca: x509.Certificate) -> bool:
    """Whether the server certificate at ``cert_path`` covers ``names``, is the CA's and has time left."""
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return (set(covered) == set(_alt_names(names)) and cert.issuer == ca.subject
            and cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_DAYS))


def local_server_tls(directory: Path, names: tuple[str, ...]) -> ServerTls:
    """The local CA of ``directory`` (created once) and a server certificate it issued for ``names``
    (issued again where the names changed or it is about to expire)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca, ca_key = _local_ca(directory)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if not (_current(cert_path, names, ca) and key_path.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
                .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
                .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        write_private(key_path, _key_pem(key))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM)
                       + ca.public_bytes(serialization.Encoding.PEM))  # the chain: server, then CA
    return ServerTls(cert_path, key_path, directory / CA_FILE)


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that trusts ``ca_file`` only (None: the system's CAs), verifying host names."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_tls(config: Config) -> ServerTls | None:
    """The TLS files of ``opmas up``'s listeners: None where TLS is off; the configured certificate
    and key (trusted through ``tls.ca``); else the local CA's, under the data dir."""
    if not config.tls_on:
        return None
    if config.tls.cert:
        return ServerTls(Path(config.tls.cert), Path(config.tls.key), Path(config.tls.ca or config.tls.cert))
    return local_server_tls(config.tls_dir, server_names(config.listen, config.tls.names))


def client_tls(config: Config) -> ssl.SSLContext | None:
    """What an OPMAS client trusts (``Config.trusted_ca``); None: the system's CAs."""
    ca = config.trusted_ca
    return client_context(ca) if ca is not None else None
