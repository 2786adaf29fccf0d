"""Pre-authentication denial of service, against a real hangard on loopback and its
unix socket: bodies are not read before authentication, bodies are capped, slow
TCP clients neither hold connections forever nor keep the local socket from answering."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, kill_vm_processes
from tests.support.waiting import free_port

pytestmark = [pytest.mark.e2e]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="hgr-", dir="/tmp"))
    hangard = Daemon(home, listen_port=free_port())
    hangard.start()
    try:
        yield hangard
    finally:
        hangard.stop()
        kill_vm_processes(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def token(daemon: Daemon) -> str:
    made = daemon.cli("token", "create", "--project", "default", "--role", "admin")
    assert made.code == 0, made
    return made.stdout.strip()


def tls_connect(daemon: Daemon, timeout: float = 20.0) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", daemon.listen_port or 0), timeout=timeout)
    return context.wrap_socket(raw)


def read_answer(tls: ssl.SSLSocket) -> bytes:
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := tls.recv(4096):  # hangard closes the connection after it
            answer += chunk
    return answer


def test_an_unauthenticated_huge_post_is_answered_401_before_its_body(daemon: Daemon) -> None:
    with tls_connect(daemon) as tls:
        tls.sendall(
            b"POST /1.0/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 300000000\r\n\r\n"
        )
        # None of the 300 MB declared follows (and so no reset from unread data can
        # lose the answer): without authentication first, hangard would wait for it.
        answer = read_answer(tls)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"connection: close" in answer.lower(), answer


def test_an_authenticated_oversized_body_is_413(daemon: Daemon, token: str) -> None:
    auth = f"Authorization: Bearer {token}\r\n".encode()
    with tls_connect(daemon) as tls:  # declared over the limit: refused unread
        tls.sendall(
            b"POST /1.0/vms HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 5242880\r\n\r\n"
        )
        answer = read_answer(tls)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    with tls_connect(daemon) as tls:  # chunked, no length: cut off as it streams in
        tls.sendall(
            b"POST /1.0/vms HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):
            for _ in range(17):  # just over 1 MiB, then nothing: hangard has read it all
                tls.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = read_answer(tls)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"body-too-large" in answer or b"limit" in answer, answer


def test_a_connection_that_never_finishes_its_headers_is_closed(daemon: Daemon) -> None:
    with tls_connect(daemon, timeout=1.0) as tls:
        tls.sendall(b"GET /1.0/host HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        deadline = time.monotonic() + 60
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                closed = tls.recv(4096) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
    assert closed, "hangard kept a connection whose headers never ended"


def test_a_connection_that_never_starts_tls_is_closed(daemon: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.listen_port or 0), timeout=1.0) as raw:
        deadline = time.monotonic() + 40  # asyncio's own default would be 60 s
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                closed = raw.recv(4096) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
    assert closed, "hangard kept a connection that never started its TLS handshake"


def test_slow_tcp_clients_do_not_keep_the_unix_socket_from_answering(daemon: Daemon) -> None:
    slow: list[ssl.SSLSocket] = []
    try:
        for _ in range(50):
            tls = tls_connect(daemon)
            tls.sendall(b"GET /1.0/host HTTP/1.1\r\n")
            slow.append(tls)
        with daemon.client() as client:
            assert client.host_info()["hangar_version"]
    finally:
        for tls in slow:
            tls.close()
