"""The certificate of the remote-access listener: self-signed ECDSA P-256 made on first use
(or the user's own), and its SHA-256 fingerprint for clients to pin.

The self-signed certificate names this host and the addresses remote access listens on
(subject alternative names); it is made again when asked to cover an address it does not name.
The key is written 0600.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from localserve.errors import ConfigError
from localserve.security.secret_store import write_private_file

VALID_DAYS = 825  # the longest validity Apple platforms accept for TLS server certificates


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex
    names: frozenset[str]  # DNS names and IP addresses it is valid for (lower case)
    self_signed: bool


def fingerprint_of(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def read_certificate(cert_file: Path, key_file: Path, self_signed: bool) -> Certificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the certificate {cert_file}: {exc}") from exc
    if not key_file.is_file():
        raise ConfigError(f"The certificate's key {key_file} does not exist.")
    names: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= {name.lower() for name in san.get_values_for_type(x509.DNSName)}
        names |= {str(address) for address in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        pass
    der = cert.public_bytes(serialization.Encoding.DER)
    return Certificate(cert_file, key_file, fingerprint_of(der), frozenset(names), self_signed)


def make_self_signed(cert_file: Path, key_file: Path, addresses: list[str]) -> Certificate:
    host = socket.gethostname()
    dns_names = sorted({host.lower(), "localhost"})
    ips = sorted({ipaddress.ip_address(a) for a in [*addresses, "127.0.0.1", "::1"]}, key=str)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"localserve on {host}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name) for name in dns_names] + [x509.IPAddress(ip) for ip in ips]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(key_file, key_pem.decode("ascii"))
    write_private_file(cert_file, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return read_certificate(cert_file, key_file, self_signed=True)


def ensure_certificate(
    folder: Path,
    addresses: list[str],
    own_cert: Path | None = None,
    own_key: Path | None = None,
) -> Certificate:
    """The user's certificate if configured; else the self-signed one, made or renewed so it
    names ``addresses`` and has at least 30 days left."""
    if own_cert is not None or own_key is not None:
        if own_cert is None or own_key is None:
            raise ConfigError("Set both remote_cert_file and remote_key_file, or neither.")
        return read_certificate(own_cert, own_key, self_signed=False)
    cert_file, key_file = folder / "remote-cert.pem", folder / "remote-key.pem"
    if cert_file.is_file() and key_file.is_file():
        current = read_certificate(cert_file, key_file, self_signed=True)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
        normalized = {str(ipaddress.ip_address(a)) for a in addresses}
        if normalized <= current.names and left > datetime.timedelta(days=30):
            return current
    return make_self_signed(cert_file, key_file, addresses)
