"""hangard's HTTPS listener and the client speak TLS 1.2+ with modern suites only.

A real uvicorn server built with hangard's configuration, on a free loopback port.
Debian's OpenSSL (security level 2) already refuses TLS 1.1 for a context that sets
nothing, so the old-version checks guard hangard's explicit minimum on hosts with a
laxer configuration; the suite checks (a TLS 1.2 client or server offering only a CBC
suite) fail without hangard's own restriction on this host too.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from hangar.api.server import remote_config
from hangar.api.tls import generate
from hangar.certs import MINIMUM_TLS, fingerprint
from hangar.client.remotes import Remote, fetch_certificate
from hangar.errors import DaemonUnavailable
from tests.support.waiting import free_port

CBC_SUITE = "ECDHE-ECDSA-AES128-SHA256"  # TLS 1.2, no AEAD: what "modern" excludes


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    pair = tmp_path / "server.crt", tmp_path / "server.key"
    generate(*pair, ["127.0.0.1"])
    return pair


@pytest.fixture
def https_port(cert: tuple[Path, Path]) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(remote_config(hello, "127.0.0.1", port, *cert))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the HTTPS server did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def client_context(
    *, maximum: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    # @SECLEVEL=0: this client is willing to speak old TLS; only the server may refuse.
    context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    return context


def get(port: int, context: ssl.SSLContext) -> tuple[str, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
        return str(tls.version()), answer


def test_tls_1_2_and_1_3_clients_are_served(https_port: int) -> None:
    version, answer = get(https_port, client_context(maximum=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and b"hello" in answer, answer
    version, answer = get(https_port, client_context())
    assert version == "TLSv1.3" and b"hello" in answer, answer


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("old", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_a_client_limited_to_old_tls_is_refused(https_port: int, old: ssl.TLSVersion) -> None:
    with pytest.raises(ssl.SSLError):
        get(https_port, client_context(maximum=old))


def test_a_tls_1_2_client_offering_only_a_cbc_suite_is_refused(https_port: int) -> None:
    with pytest.raises(ssl.SSLError):
        get(https_port, client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=CBC_SUITE))


@pytest.fixture
def weak_server(cert: tuple[Path, Path]) -> Iterator[int]:
    """A TLS server that offers TLS 1.2 with a CBC suite only (as an old server would)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CBC_SUITE)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = int(listener.getsockname()[1])

    def serve() -> None:
        for _ in range(2):  # the probe, then the pinned client
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    listener.close()
    thread.join(15)


def test_the_client_refuses_a_server_offering_only_old_suites(
    weak_server: int, cert: tuple[Path, Path]
) -> None:
    url = f"https://127.0.0.1:{weak_server}"
    with pytest.raises(DaemonUnavailable, match="cannot reach"):
        fetch_certificate(url)
    pem = cert[0].read_text()
    remote = Remote(name="r", url=url, token="t", certificate=pem, fingerprint=fingerprint(pem))
    assert remote.ssl_context().minimum_version == MINIMUM_TLS
    with pytest.raises(ssl.SSLError):
        get(weak_server, remote.ssl_context())
