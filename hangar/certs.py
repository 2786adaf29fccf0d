"""Certificate fingerprints, shared by hangard (which logs its own) and the client (which pins)."""

from __future__ import annotations

import hashlib
import ssl


def fingerprint(pem_or_der: str | bytes) -> str:
    """SHA-256 of the DER certificate, as colon-separated upper-case hex (like openssl)."""
    der = ssl.PEM_cert_to_DER_cert(pem_or_der) if isinstance(pem_or_der, str) else pem_or_der
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# TLS 1.2 is the oldest version hangard and the client speak: 1.0 and 1.1 have no
# AEAD suites and are deprecated (RFC 8996). Set on every context explicitly, so a
# host whose OpenSSL configuration allows older versions still refuses them.
MINIMUM_TLS = ssl.TLSVersion.TLSv1_2
# TLS 1.2 suites: forward secret key exchange (ECDHE) with an AEAD cipher only. TLS 1.3
# suites are all of that kind and OpenSSL configures them apart from this list.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict ``context`` (server or client) to TLS 1.2+ with modern suites."""
    context.minimum_version = MINIMUM_TLS
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION  # CRIME
    return context
