"""Every QEMU runs sandboxed, and hangard's state is private (issue 14, items 3 and 5).

Read from /proc of the running QEMU, as an attacker who escaped into it would be:
its uid, capabilities, seccomp mode, no_new_privs and mount namespace.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import ApiError, Client
from hangar.services.qemu.jail import QEMU_GID, is_qemu_uid
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


@pytest.fixture
def two_vms(client: Client) -> Iterator[list[dict[str, object]]]:
    names = ["sandbox-a", "sandbox-b"]
    try:
        vms = [client.launch({"name": name, "image": "tiny"}) for name in names]
        for name in names:
            wait_for_marker(client, name, MARKER)
        yield [client.vm(name) for name in names]
    finally:
        for name in names:
            try:
                client.delete(name, force=True)
            except ApiError as exc:
                if exc.status != 404:
                    raise
    del vms


def test_qemu_runs_unprivileged_in_its_own_mount_namespace(
    daemon: Daemon, two_vms: list[dict[str, object]]
) -> None:
    assert daemon.proc is not None
    hangard_ns = os.readlink(f"/proc/{daemon.proc.pid}/ns/mnt")
    uids = []
    for vm in two_vms:
        pid = int(str(vm["pid"]))
        assert b"-uuid" in Path(f"/proc/{pid}/cmdline").read_bytes()  # QEMU itself
        status = _status(pid)
        uid = int(status["Uid"].split()[0])
        assert uid != 0 and is_qemu_uid(uid)
        assert all(int(u) == uid for u in status["Uid"].split())  # real, effective, saved
        assert all(int(g) == uid for g in status["Gid"].split())
        assert status["Groups"].split() == [str(QEMU_GID)]
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, caps
        assert status["Seccomp"] == "2"  # QEMU's -sandbox filter
        assert status["NoNewPrivs"] == "1"
        assert os.readlink(f"/proc/{pid}/ns/mnt") != hangard_ns
        uids.append(uid)
    assert uids[0] != uids[1]  # one uid per VM

    # Inside A's namespace: A's own folder, none of B's, nor hangard's database.
    a, b = two_vms
    root = Path(f"/proc/{a['pid']}/root")
    lib = daemon.home / "lib"
    inside = root / str(lib).lstrip("/")
    assert (inside / "vms" / str(a["id"]) / "root.qcow2").exists()
    assert not (inside / "vms" / str(b["id"])).exists()
    assert not (inside / "hangar.db").exists()
    assert not (root / "etc" / "shadow").exists()
    # On the host, B's files are B's uid's alone: A's uid could not open them. B's
    # folders are root's (B's QEMU cannot plant a symlink where hangard reads).
    b_dir = lib / "vms" / str(b["id"])
    for path in [b_dir, *b_dir.rglob("*")]:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            assert info.st_uid in (0, uids[1]) and not info.st_mode & 0o077, path
        elif stat.S_ISDIR(info.st_mode):
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, uids[1], 0o750)


def test_nothing_under_hangar_home_is_open_to_others(daemon: Daemon, client: Client) -> None:
    name = "private-state"
    try:
        client.launch({"name": name, "image": "tiny"})
        wait_for_marker(client, name, MARKER)
        client.create_snapshot(name, "warm", memory=True)
        client.stop(name, force=True)
        client.start(name)
        wait_for_marker(client, name, MARKER, occurrence=2)
        loose = []
        for top in (daemon.home / "lib", daemon.home / "run"):
            for dirpath, dirs, files in os.walk(top):
                for entry in [dirpath, *(os.path.join(dirpath, n) for n in [*dirs, *files])]:
                    info = os.lstat(entry)
                    if stat.S_ISLNK(info.st_mode):
                        continue
                    mode = stat.S_IMODE(info.st_mode)
                    shared = info.st_gid == QEMU_GID and info.st_uid == 0  # images QEMUs read
                    # A VM's folders: root's, group its QEMU's uid, which opens files there.
                    vm_folder = stat.S_ISDIR(info.st_mode) and is_qemu_uid(info.st_gid)
                    if vm_folder and mode & 0o020:
                        loose.append(f"{entry} {mode:o} {info.st_uid}:{info.st_gid}")
                    if mode & 0o007 or (mode & 0o070 and not shared and not vm_folder):
                        loose.append(f"{entry} {mode:o} {info.st_uid}:{info.st_gid}")
        assert loose == []
    finally:
        try:
            client.delete(name, force=True)
        except ApiError as exc:
            if exc.status != 404:
                raise


def test_the_qmp_socket_is_hangards_and_the_sandboxed_qemu_answers_on_it(
    daemon: Daemon, client: Client
) -> None:
    """hangard binds QEMU's QMP socket (root's, 0600: the VM's uid may not open it) and
    hands QEMU the listening descriptor through bwrap and setpriv; QEMU, as the VM's
    uid, serves QMP on it, and a restarted hangard still connects by the path."""
    name = "qmp-fd"
    try:
        client.launch({"name": name, "image": "tiny"})
        wait_for_marker(client, name, MARKER)
        vm = client.vm(name)
        pid = int(str(vm["pid"]))
        assert is_qemu_uid(int(_status(pid)["Uid"].split()[0]))
        sock = daemon.home / "run" / "vm" / str(vm["id"])[:12] / "qmp.sock"
        info = sock.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-qmp" not in args  # QEMU made no QMP socket of its own
        chardev = next(a.decode() for a in args if a.startswith(b"socket,id=qmp,"))
        assert chardev.endswith(",server=on,wait=off") and "path=" not in chardev
        fd = int(chardev.split("fd=", 1)[1].split(",", 1)[0])
        assert os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        # QEMU answers on it: pause and resume are QMP stop and cont.
        assert client.pause(name)["state"] == "paused"
        assert client.resume(name)["state"] == "running"
        daemon.kill()
        os.kill(pid, 0)  # QEMU is still there
        daemon.start()
        with daemon.client() as fresh:
            adopted = fresh.vm(name)
            assert adopted["state"] == "running" and adopted["pid"] == pid
            assert fresh.pause(name)["state"] == "paused"
            assert fresh.resume(name)["state"] == "running"
        info = sock.lstat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)
    finally:
        try:
            client.delete(name, force=True)
        except ApiError as exc:
            if exc.status != 404:
                raise
