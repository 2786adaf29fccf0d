"""Certificate fingerprints, shared by hangard (which logs its own) and the client (which pins)."""

from __future__ import annotations

import hashlib
import ssl


def fingerprint(pem_or_der: str | bytes) -> str:
    """SHA-256 of the DER certificate, as colon-separated upper-case hex (like openssl)."""
    der = ssl.PEM_cert_to_DER_cert(pem_or_der) if isinstance(pem_or_der, str) else pem_or_der
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
