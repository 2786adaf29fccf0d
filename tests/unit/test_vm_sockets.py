"""hangard reaches a QEMU's sockets and pid file without following links (hangar/host/sockets.py):
the runtime folder is the VM uid's, so a compromised QEMU could swap them for symlinks."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.errors import QemuFailed
from hangar.host.sockets import open_unix_connection, reachable_socket, read_small_file
from hangar.services.qemu.process import descends_from
from hangar.services.qmp.monitor import Monitor


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Path]:
    """A root-owned socket elsewhere on the host, as hangard's own would be."""
    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    try:
        yield path
    finally:
        server.close()


def test_a_socket_is_reached(listening: Path) -> None:
    async def connect() -> bytes:
        _, writer = await open_unix_connection(listening)
        name = writer.get_extra_info("peername")
        writer.close()
        return str(name).encode()

    assert asyncio.run(connect()) == str(listening).encode()


def test_a_symlink_in_place_of_a_socket_is_not_followed(tmp_path: Path, listening: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "qmp.sock").symlink_to(listening)
    with pytest.raises(OSError) as refused, reachable_socket(runtime / "qmp.sock"):
        pass
    assert refused.value.errno == errno.ENOTSOCK
    with pytest.raises(OSError):
        asyncio.run(open_unix_connection(runtime / "qmp.sock"))


def test_a_regular_file_is_not_a_socket(tmp_path: Path) -> None:
    (tmp_path / "qga.sock").write_text("")
    with pytest.raises(OSError), reachable_socket(tmp_path / "qga.sock"):
        pass


def test_the_monitor_never_connects_through_a_symlink(tmp_path: Path, listening: Path) -> None:
    link = tmp_path / "qmp.sock"
    link.symlink_to(listening)

    async def connect() -> None:
        # Through the link, the connect would succeed and then wait for a QMP greeting.
        await asyncio.wait_for(Monitor("t").connect(link, timeout=0.3, alive=lambda: True), 10)

    with pytest.raises(QemuFailed, match="did not answer"):
        asyncio.run(connect())


def test_a_pid_file_is_read_only_if_it_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "qemu.pid").write_text("4242\n")
    assert read_small_file(tmp_path / "qemu.pid").strip() == "4242"
    secret = tmp_path / "secret"
    secret.write_text("1\n")
    (tmp_path / "link.pid").symlink_to(secret)
    with pytest.raises(OSError):
        read_small_file(tmp_path / "link.pid")


def test_a_pid_is_killable_only_when_it_descends_from_the_helper() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert descends_from(child.pid, os.getpid())
        assert not descends_from(1, os.getpid())
        assert not descends_from(os.getppid(), os.getpid())
    finally:
        child.kill()
        child.wait()


def test_the_monitor_refuses_the_link_at_once(tmp_path: Path, listening: Path) -> None:
    """It does not connect and then wait for a greeting: it refuses the link itself."""
    link = tmp_path / "qmp.sock"
    link.symlink_to(listening)

    async def connect() -> None:
        await Monitor("t").connect(link, timeout=30, alive=lambda: True)

    with pytest.raises(QemuFailed, match="refusing to follow"):
        asyncio.run(asyncio.wait_for(connect(), 10))
