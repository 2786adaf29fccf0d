"""Getting a VM's files ready for its sandboxed QEMU (see jail.py for the sandbox).

QEMU runs as the VM's own uid and sees only what its :class:`Jail` mounts, so
before it starts hangard hands it what it must open: the VM's folders (owned by
the VM uid, 0700), read access to the shared images it boots from (group
QEMU_GID, 0640, never writable), and device nodes of its own for /dev/kvm and
/dev/net/tun (the host's stay root's 0600). Taps are made the VM uid's, so only
this VM's QEMU may attach to them. Everything else stays root's.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

from hangar.errors import QemuFailed, ResourceLimit
from hangar.services.qemu.argv import VMFiles
from hangar.services.qemu.jail import QEMU_GID, QEMU_UID_BASE, QEMU_UID_COUNT, Jail, is_qemu_uid
from hangar.spec.host import HostFacts
from hangar.spec.vm import VMConfig

_lock = threading.Lock()
# uids of QEMUs that are not a VM's (the warm-template helper), in use now.
_helpers: set[int] = set()

KVM = Path("/dev/kvm")
TUN = Path("/dev/net/tun")
# linux/if_tun.h
_TUNSETIFF = 0x400454CA
_TUNSETOWNER = 0x400454CC
_TUNSETGROUP = 0x400454CE
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000


def vm_uid(vms: Path, vm_dir: Path) -> int:
    """The uid the VM's QEMU runs as. Its folder's group records it (the folder is
    root's, group the VM uid, 0750): a VM keeps its uid for life, and a new VM takes
    the lowest one no other VM folder has."""
    with _lock:
        group = vm_dir.stat().st_gid
        if is_qemu_uid(group):
            return group
        uid = _free(vms)
        os.chown(vm_dir, 0, uid)
        os.chmod(vm_dir, 0o750)
        return uid


def helper_uid(vms: Path) -> int:
    """A uid for a QEMU that is no VM's; give it back with :func:`release_helper`."""
    with _lock:
        uid = _free(vms)
        _helpers.add(uid)
        return uid


def release_helper(uid: int) -> None:
    with _lock:
        _helpers.discard(uid)


def _free(vms: Path) -> int:
    used = set(_helpers)
    for entry in os.scandir(vms):
        used.add(entry.stat(follow_symlinks=False).st_gid)
    for n in range(1, QEMU_UID_COUNT):
        if QEMU_UID_BASE + n not in used:
            return QEMU_UID_BASE + n
    raise ResourceLimit("every uid reserved for QEMU is in use", hint="delete unused VMs")


def own(folder: Path, uid: int, *, writable_folders: bool = False) -> None:
    """Give what ``folder`` holds to ``uid`` alone (files ``uid``'s, no group or other
    bits). A file that is also linked elsewhere (an ISO hard-linked from the user's
    file) keeps its owner: the user's inode is not hangar's to change.

    The folders themselves stay root's, group ``uid``, 0750: QEMU may open its files
    but not add, rename or replace entries. hangard (root) reads and rotates files
    there (serial.log, qemu.log, exit-status); a QEMU that could put a symlink in
    their place would have root read or truncate any host file for it.
    ``writable_folders``: the runtime folder, where QEMU makes its sockets and pid
    file (hangard only connects to and unlinks those).
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for root, dirs, names in os.walk(folder):
        for name in dirs:
            _own_folder(Path(root) / name, uid, writable_folders)
        for name in names:
            _own_one(Path(root) / name, uid)
    _own_folder(folder, uid, writable_folders)


def _own_folder(path: Path, uid: int, writable: bool) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return
    owner, mode = (uid, 0o700) if writable else (0, 0o750)
    if (info.st_uid, info.st_gid) != (owner, uid):
        os.chown(path, owner, uid, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def _own_one(path: Path, uid: int) -> None:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        return  # sockets are QEMU's own already; links and devices are left as they are
    if info.st_uid != uid or info.st_gid != uid:
        os.chown(path, uid, uid, follow_symlinks=False)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


def _readable_iso(iso: Path) -> None:
    """An installer ISO hard-linked from the user's file keeps the user's owner and
    mode (own() leaves it): QEMU's uid reads it if others may; else it becomes a copy
    of the VM's own (once, then own() gives it to the VM uid)."""
    try:
        info = os.lstat(iso)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode) or info.st_nlink < 2 or info.st_mode & 0o004:
        return
    tmp = iso.with_name(iso.name + ".copy")
    shutil.copyfile(iso, tmp)
    os.replace(tmp, iso)


def share_read_only(path: Path) -> None:
    """Let QEMUs read ``path`` (a shared image file): root's, group QEMU_GID, 0640.
    Each QEMU still sees only the files its own namespace mounts."""
    info = path.stat()
    if info.st_gid != QEMU_GID:
        os.chown(path, 0, QEMU_GID)
    if stat.S_IMODE(info.st_mode) != 0o640:
        os.chmod(path, 0o640)


def private_ram(template_ram: Path, files: VMFiles) -> Path:
    """A copy of a warm template's RAM file for one VM's QEMU alone.

    QEMU 7.2 opens a memory-backend-file read-write even to map it private: were the
    template's file shared, every VM's QEMU could write it, and a compromised one
    would change the memory of every VM launched from the template (and of those
    running, in pages they have not touched yet). The copy is sparse (zero pages take
    no disk) and a reflink where the filesystem has them; hangard unlinks it once
    QEMU has mapped it. The cost: VMs from one template no longer share the pages
    none of them wrote. QEMU >= 8.2 needs no copy (HostFacts.maps_read_only_ram)."""
    copy = files.dir / "ram.img"
    copy.unlink(missing_ok=True)
    subprocess.run(
        ["cp", "--reflink=auto", "--sparse=always", "--", str(template_ram), str(copy)],
        check=True,
        capture_output=True,
    )
    return copy


def backing_chain(disk: Path) -> list[Path]:
    """The backing files of the qcow2 ``disk``, nearest first, read from the headers
    (no qemu-img run on every start). hangar's qcow2 files name absolute paths or
    paths relative to the image's folder."""
    chain: list[Path] = []
    current = disk
    while len(chain) < 64:
        try:
            with current.open("rb") as fh:
                head = fh.read(20)
                if len(head) < 20 or head[:4] != b"QFI\xfb":
                    break
                offset, size = struct.unpack(">QI", head[8:20])
                if not offset or not size:
                    break
                fh.seek(offset)
                name = fh.read(size).decode()
        except OSError:
            break
        current = (current.parent / name) if not name.startswith("/") else Path(name)
        chain.append(current.resolve())
    return chain


def device_node(host: Path, into: Path, uid: int) -> Path:
    """A node of the VM's own for the character device ``host`` (same numbers), 0600
    owned by ``uid``: the VM's QEMU may open it, no other QEMU and no local user."""
    node = into / host.name
    rdev = os.stat(host).st_rdev
    try:
        current = os.lstat(node)
        if not stat.S_ISCHR(current.st_mode) or current.st_rdev != rdev:
            node.unlink()
            raise FileNotFoundError(node)
    except FileNotFoundError:
        os.mknod(node, 0o600 | stat.S_IFCHR, rdev)
    os.chown(node, uid, uid)
    os.chmod(node, 0o600)
    return node


def give_tap(name: str, uid: int) -> None:
    """Make the (persistent) tap ``name`` the VM uid's: its QEMU may attach to it
    without CAP_NET_ADMIN, another VM's QEMU may not."""
    fd = os.open(TUN, os.O_RDWR | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), _IFF_TAP | _IFF_NO_PI)
        fcntl.ioctl(fd, _TUNSETIFF, ifr)
        fcntl.ioctl(fd, _TUNSETOWNER, uid)
        fcntl.ioctl(fd, _TUNSETGROUP, uid)
    except OSError as exc:
        raise QemuFailed(f"could not give tap {name} to its VM's QEMU: {exc}") from exc
    finally:
        os.close(fd)


def prepare(
    vms: Path,
    files: VMFiles,
    config: VMConfig,
    host: HostFacts,
    *,
    ram: Path | None = None,
    uid: int | None = None,
    taps: bool = True,
) -> Jail:
    """Hand the VM's files to its QEMU uid and say what its sandbox mounts."""
    files.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    uid = uid if uid is not None else vm_uid(vms, files.dir)
    _readable_iso(files.iso)
    # Made now, as the VM uid's: QEMU cannot make files in its (root's) VM folder.
    files.serial_log.touch(mode=0o600)
    own(files.dir, uid)
    own(files.runtime, uid, writable_folders=True)
    readable: list[Path] = []

    def read(paths: Iterable[Path]) -> None:
        for path in paths:
            if not path.is_relative_to(files.dir) and path not in readable:
                share_read_only(path)
                readable.append(path)

    read(backing_chain(files.disk))
    if config.boot is not None:
        read(Path(p) for p in (config.boot.kernel, config.boot.initrd) if p)
    writable = [files.dir, files.runtime]
    for disk in config.data_disks:
        path = Path(disk.path)
        _own_one(path, uid)
        writable.append(path)
        read(backing_chain(path))
    if ram is not None and not ram.is_relative_to(files.dir):
        # A warm template's RAM file, which QEMU >= 8.2 opens read-only (readonly=on,
        # rom=off); older QEMUs get a copy of their own in the VM folder (private_ram).
        read([ram])
    devices: list[tuple[Path, Path]] = []
    dev = files.dir / "dev"
    if host.accelerator == "kvm" or (taps and any(n.type == "network" for n in config.nics)):
        dev.mkdir(mode=0o750, exist_ok=True)
        os.chown(dev, 0, uid)
    if host.accelerator == "kvm":
        devices.append((device_node(KVM, dev, uid), KVM))
    if taps and any(n.type == "network" for n in config.nics):
        devices.append((device_node(TUN, dev, uid), TUN))
        for nic in config.nics:
            if nic.type == "network" and nic.tap:
                give_tap(str(nic.tap), uid)
    return Jail(uid=uid, writable=tuple(writable), readable=tuple(readable), devices=tuple(devices))
