"""Handing a VM's files to its QEMU uid (hangar/services/qemu/confine.py). Runs as root."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hangar.services.qemu import confine
from hangar.services.qemu.jail import QEMU_GID, QEMU_UID_BASE, is_qemu_uid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_each_vm_gets_its_own_uid_for_life(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ua = confine.vm_uid(tmp_path, a)
    ub = confine.vm_uid(tmp_path, b)
    assert is_qemu_uid(ua) and is_qemu_uid(ub) and ua != ub
    assert confine.vm_uid(tmp_path, a) == ua  # recorded as the folder's owner
    helper = confine.helper_uid(tmp_path)
    assert helper not in (ua, ub)
    confine.release_helper(helper)


def test_own_gives_the_folder_to_the_uid_alone_but_not_a_users_linked_file(
    tmp_path: Path,
) -> None:
    vm = tmp_path / "vm"
    (vm / "snapshots").mkdir(parents=True)
    disk = vm / "snapshots" / "layer.qcow2"
    disk.write_bytes(b"x")
    disk.chmod(0o644)
    users = tmp_path / "user.iso"
    users.write_bytes(b"iso")
    os.link(users, vm / "install.iso")
    confine.own(vm, QEMU_UID_BASE + 9)
    info = disk.stat()
    assert (info.st_uid, info.st_gid) == (QEMU_UID_BASE + 9,) * 2
    assert not info.st_mode & 0o077
    # Folders: root's, so the VM uid cannot put a symlink where hangard reads.
    for folder in (vm, vm / "snapshots"):
        info = folder.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
            0,
            QEMU_UID_BASE + 9,
            0o750,
        )
    assert users.stat().st_uid == 0  # the user's inode is not changed
    runtime = tmp_path / "run"
    confine.own(runtime, QEMU_UID_BASE + 9, writable_folders=True)
    assert runtime.stat().st_uid == QEMU_UID_BASE + 9  # QEMU makes its sockets there


def test_a_private_linked_iso_becomes_the_vms_copy(tmp_path: Path) -> None:
    users = tmp_path / "user.iso"
    users.write_bytes(b"iso")
    users.chmod(0o600)
    iso = tmp_path / "install.iso"
    os.link(users, iso)
    confine._readable_iso(iso)
    assert iso.stat().st_ino != users.stat().st_ino and iso.read_bytes() == b"iso"
    readable = tmp_path / "open.iso"
    readable.write_bytes(b"iso")
    readable.chmod(0o644)
    link = tmp_path / "install2.iso"
    os.link(readable, link)
    confine._readable_iso(link)
    assert link.stat().st_ino == readable.stat().st_ino  # QEMU's uid may read it


def test_backing_chain_and_shared_images(tmp_path: Path) -> None:
    base = tmp_path / "images" / "disk.qcow2"
    base.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    mid = tmp_path / "mid.qcow2"
    top = tmp_path / "top.qcow2"
    for child, parent in ((mid, base), (top, mid)):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(parent),
             str(child)],
            check=True,
        )  # fmt: skip
    assert confine.backing_chain(top) == [mid, base]
    assert confine.backing_chain(base) == []
    confine.share_read_only(base)
    info = base.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, QEMU_GID, 0o640)


def test_device_node_of_the_vms_own(tmp_path: Path) -> None:
    node = confine.device_node(Path("/dev/null"), tmp_path, QEMU_UID_BASE + 3)
    info = node.lstat()
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.stat("/dev/null").st_rdev
    assert info.st_uid == QEMU_UID_BASE + 3 and stat.S_IMODE(info.st_mode) == 0o600
