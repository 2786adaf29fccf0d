"""hangard's TLS certificate: self-signed, made on first start, or given by the admin.

The certificate is not meant to chain to any CA: clients pin it (trust on first
use, as SSH does) by its SHA-256 fingerprint.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hangar.certs import fingerprint

__all__ = ["ensure_certificate", "fingerprint", "generate"]

VALID_DAYS = 3650


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def generate(cert_path: Path, key_path: Path, hosts: list[str]) -> None:
    """Make a self-signed ECDSA P-256 certificate valid for ``hosts`` (names or IPs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hangard@{socket.gethostname()}")])
    alt: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(
    state_dir: Path, host: str, cert: Path | None = None, key: Path | None = None
) -> tuple[Path, Path]:
    """The certificate and key to serve: the given ones, or hangard's own (made once)."""
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise SystemExit("hangard: --cert and --key go together")
        for path in (cert, key):
            if not path.is_file():
                raise SystemExit(f"hangard: no such file: {path}")
        return cert, key
    folder = state_dir / "tls"
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    if not (cert_path.is_file() and key_path.is_file()):
        generate(cert_path, key_path, [host, "localhost", "127.0.0.1", socket.gethostname()])
    return cert_path, key_path
