"""QEMU's QMP socket is hangard's: bound and listening before QEMU starts, handed to it
as an inherited descriptor (-chardev socket,fd=N), and connected to at once.

The process-level tests run the real supervising shell (and, when possible, the real
bwrap and setpriv) around a stand-in for QEMU; the VM-level ones use the fake QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.errors import QemuFailed
from hangar.services import supervisor
from hangar.services.qemu import process
from hangar.services.qemu.argv import VMFiles
from hangar.services.qemu.jail import QEMU_UID_BASE, QEMU_UID_COUNT, Jail
from hangar.services.qmp.monitor import Monitor
from hangar.spec.vm import VMCreate
from tests.component.conftest import REPO, PlatformFactory

# A uid from the reserved range no VM of a test home gets (they count from the bottom).
JAIL_UID = QEMU_UID_BASE + QEMU_UID_COUNT - 7

# Stands in for QEMU: finds fd=N in its argv (as QEMU reads -chardev socket,fd=N),
# then accepts on it and says who it is, or (with exit=K) exits K without accepting.
STAND_IN = """#!/usr/bin/python3
import os, socket, sys
args = " ".join(sys.argv[1:])
fd = int(args.split("fd=", 1)[1].split(",", 1)[0])
if "exit=" in args:
    sys.exit(int(args.split("exit=", 1)[1].split(",", 1)[0]))
conn, _ = socket.socket(fileno=fd).accept()
conn.sendall(b"uid=%d fd=%d\\n" % (os.getuid(), fd))
conn.recv(1)
"""


@pytest.fixture
def files() -> Iterator[VMFiles]:
    # Short path: unix socket paths must stay under 108 bytes.
    root = Path(os.path.realpath(tempfile.mkdtemp(prefix="hq-", dir="/tmp")))
    folder = root / "vm"
    folder.mkdir()
    yield VMFiles(dir=folder, runtime=root / "run")
    shutil.rmtree(root, ignore_errors=True)


def _stand_in(files: VMFiles) -> Path:
    script = files.dir / "qemu"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    return script


async def _read_until_eof(sock: socket.socket, timeout: float = 20.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(timeout):
        try:
            while chunk := await loop.sock_recv(sock, 1024):
                data += chunk
                if data.endswith(b"\n"):
                    break
        except ConnectionResetError:
            pass  # how a listening socket closed with the connection queued ends it
    return data


def test_hangard_owns_the_socket_file_and_is_connected_before_qemu_runs(
    files: VMFiles,
) -> None:
    qmp = process.open_qmp(files)
    try:
        info = os.lstat(files.qmp_socket)
        assert stat.S_ISSOCK(info.st_mode)
        assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o600
        # Connected already: the connection waits in the backlog, no accept yet.
        client = qmp.take_client()
        assert client.getpeername() == str(files.qmp_socket)
        conn, _ = qmp.listener.accept()  # what QEMU will do
        conn.sendall(b"hi")
        assert client.recv(2) == b"hi"
        conn.close()
        client.close()
    finally:
        qmp.close()


async def test_the_listening_socket_reaches_qemu_through_the_supervising_shell(
    files: VMFiles,
) -> None:
    qmp = process.open_qmp(files)
    client = qmp.take_client()
    try:
        argv = [str(_stand_in(files)), "-chardev", f"socket,id=qmp,fd={qmp.fd},server=on"]
        fd = qmp.fd
        process.spawn(argv, files, qmp=qmp)
        qmp.close_listener()
        greeting = await _read_until_eof(client)
        assert greeting == b"uid=%d fd=%d\n" % (os.geteuid(), fd)
    finally:
        client.close()
        qmp.close()


async def test_qemu_exiting_before_it_accepts_ends_the_queued_connection(
    files: VMFiles,
) -> None:
    """No poll is needed to notice: the shell records the exit status, then exits, and
    with it the last holder of the listening socket (hangard closed its copy)."""
    qmp = process.open_qmp(files)
    client = qmp.take_client()
    try:
        argv = [str(_stand_in(files)), "-chardev", f"socket,id=qmp,fd={qmp.fd},exit=3"]
        process.spawn(argv, files, qmp=qmp)
        qmp.close_listener()
        assert await _read_until_eof(client) == b""
        # Written before the connection ended, so a reader at EOF always finds it.
        status = process.read_exit_status(files)
        assert status is not None and status.code == 3
    finally:
        client.close()
        qmp.close()


def _can_sandbox() -> bool:
    return (
        os.geteuid() == 0
        and Path("/usr/bin/bwrap").exists()
        and Path("/usr/bin/setpriv").exists()
        and Path("/usr/bin/python3").exists()
    )


@pytest.mark.skipif(not _can_sandbox(), reason="needs root, bwrap, setpriv and /usr/bin/python3")
async def test_bwrap_and_setpriv_pass_the_listening_socket_to_the_qemu_uid(
    files: VMFiles,
) -> None:
    """The sandbox keeps the inherited descriptor open and numbered as it was: QEMU,
    as the VM's uid, serves a socket whose file only root may open."""
    files.dir.chmod(0o755)  # the stand-in must be readable by the jail's uid
    files.runtime.mkdir(mode=0o700)
    os.chown(files.runtime, JAIL_UID, JAIL_UID)  # as confine.own makes it
    script = _stand_in(files)
    jail = Jail(uid=JAIL_UID, writable=(files.dir, files.runtime))
    qmp = process.open_qmp(files)
    client = qmp.take_client()
    try:
        fd = qmp.fd
        argv = [str(script), "-chardev", f"socket,id=qmp,fd={fd},server=on"]
        process.spawn(argv, files, jail, qmp=qmp)
        qmp.close_listener()
        assert await _read_until_eof(client) == b"uid=%d fd=%d\n" % (JAIL_UID, fd)
        info = os.lstat(files.qmp_socket)
        assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o600
    finally:
        client.close()
        qmp.close()


def test_the_fake_qemu_refuses_a_descriptor_that_is_not_a_listening_socket(
    files: VMFiles,
) -> None:
    """As QEMU 7.2 does: the fake must not serve QMP on what QEMU could not."""
    files.runtime.mkdir()
    pidfile = files.runtime / "qemu.pid"
    console = (
        f"socket,id=console,path={files.console_socket},server=on,wait=off,"
        f"logfile={files.serial_log}"
    )
    left, right = socket.socketpair()
    try:
        for fd, passed in ((left.fileno(), True), (99, False)):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.support.fake_qemu",
                    *("-chardev", console),
                    *("-chardev", f"socket,id=qmp,fd={fd},server=on,wait=off"),
                    *("-mon", "chardev=qmp,mode=control", "-pidfile", str(pidfile)),
                ],
                pass_fds=(fd,) if passed else (),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode != 0 and f"fd {fd}" in done.stderr
    finally:
        left.close()
        right.close()


async def test_a_vms_qmp_socket_is_hangards_and_qemu_serves_it_on_the_fd(
    make_platform: PlatformFactory,
) -> None:
    platform = make_platform()
    vm = await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert vm.pid is not None
    config = platform.vms.repo.get("web").config
    sock = platform.vms.files(config).qmp_socket
    info = os.lstat(sock)
    assert stat.S_ISSOCK(info.st_mode)
    assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o600
    cmdline = Path(f"/proc/{vm.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-qmp" not in cmdline
    chardev = next(a for a in cmdline if a.startswith(b"socket,id=qmp,"))
    assert chardev.startswith(b"socket,id=qmp,fd=") and b"path=" not in chardev
    # hangard's copy of the listening socket is closed: QEMU holds the only one.
    ours = set()
    for n in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # listdir's own descriptor
            ours.add(os.readlink(f"/proc/self/fd/{n}"))
    listening = os.readlink(f"/proc/{vm.pid}/fd/{chardev.split(b'fd=')[1].split(b',')[0].decode()}")
    assert listening.startswith("socket:") and listening not in ours
    assert (await platform.vms.pause("web")).state.value == "paused"


async def test_a_qemu_that_exits_before_accepting_fails_without_waiting_for_the_timeout(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "QMP_CONNECT_TIMEOUT", 3600.0)
    platform = make_platform(FAKE_QEMU_FAIL="-device foo: unknown device")
    async with asyncio.timeout(60):
        with pytest.raises(QemuFailed, match="exited before its QMP socket answered"):
            await platform.vms.create(VMCreate(name="web", image="tiny"))


async def test_attach_reports_a_qemu_that_never_answers_by_the_timeout(
    files: VMFiles,
) -> None:
    qmp = process.open_qmp(files)  # nobody accepts
    try:
        with pytest.raises(QemuFailed, match=r"QMP socket did not answer in 0\.2 s"):
            await Monitor("t").attach(qmp.take_client(), timeout=0.2, alive=lambda: True)
    finally:
        qmp.close()


async def test_attach_tells_a_qemu_that_exited_from_one_that_hung_up(files: VMFiles) -> None:
    for alive, message in ((False, "QEMU exited before"), (True, "hung up its QMP socket")):
        qmp = process.open_qmp(files)
        client = qmp.take_client()
        qmp.close_listener()  # the last holder is gone: the queued connection ends
        with pytest.raises(QemuFailed, match=message):
            await Monitor("t").attach(
                client, timeout=30, alive=(lambda: True) if alive else (lambda: False)
            )


async def test_attach_waits_briefly_for_a_child_not_reaped_yet(files: VMFiles) -> None:
    """A direct child (the warm-template helper) that hung up may be reaped a moment
    after: its death, not a hang-up, is reported."""
    qmp = process.open_qmp(files)
    client = qmp.take_client()
    qmp.close_listener()
    seen: list[bool] = []

    def alive() -> bool:
        seen.append(True)
        return len(seen) < 3  # reaped at the third look

    with pytest.raises(QemuFailed, match="QEMU exited before"):
        await Monitor("t").attach(client, timeout=30, alive=alive)
