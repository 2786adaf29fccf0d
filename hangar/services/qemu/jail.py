"""The sandbox every QEMU runs in, as a command-line prefix. Pure: unit tested.

QEMU is the part of hangar a guest attacks: an escape must not be host root, nor
reach another VM. So each QEMU runs

* as a uid of its own (``uid``), taken from a reserved range. One uid per VM rather
  than one ``hangar-qemu`` user: another VM's QEMU then cannot open this VM's
  disks, sockets or taps even if it could name them (DAC, like libvirt's per-VM
  labels), and numeric ids need no /etc/passwd entries (setpriv takes numbers);
* with no capabilities at all (effective, permitted, inheritable, ambient and the
  bounding set cleared) and no_new_privs, so no setuid binary gives any back;
* under QEMU's own seccomp filter (``-sandbox``: no obsolete syscalls, no setuid,
  no fork/exec, no scheduler or resource changes);
* in a mount namespace of its own (bubblewrap) that holds read-only /usr (QEMU,
  its libraries, firmware), a minimal /dev, the VM's own folders read-write and
  the read-only files it boots from (backing images, kernel, initrd). Nothing else
  of the host exists there: not hangard's database, not other VMs.

The network namespace is hangard's (taps and user-mode port forwards live there)
and so is the pid namespace: QEMU's ``-pidfile`` holds its host pid, which the
supervisor watches and adopts after a restart. bwrap stays as QEMU's parent and
exits with QEMU's status (128+N for signal N, as sh reports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The reserved range: VM n runs as QEMU_UID_BASE + n (n >= 1). QEMU_UID_BASE itself is
# the group of files every QEMU may read (shared read-only images: each QEMU still sees
# only its own in its namespace). Far above the ranges useradd and subuid hand out.
QEMU_UID_BASE = 1_800_000_000
QEMU_UID_COUNT = 1_000_000
QEMU_GID = QEMU_UID_BASE

SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def is_qemu_uid(uid: int) -> bool:
    return QEMU_UID_BASE < uid < QEMU_UID_BASE + QEMU_UID_COUNT


@dataclass(frozen=True)
class Jail:
    """What one QEMU may see and who it runs as."""

    uid: int
    # Mounted read-write at the same path: the VM's folder and runtime folder, volumes.
    writable: tuple[Path, ...]
    # Mounted read-only at the same path: backing images, kernel, initrd.
    readable: tuple[Path, ...] = ()
    # Device nodes: (the VM's own node, where QEMU sees it), e.g. its /dev/kvm.
    devices: tuple[tuple[Path, Path], ...] = ()
    bwrap: str = "/usr/bin/bwrap"
    setpriv: str = "/usr/bin/setpriv"


# What both jails (QEMU's, dnsmasq's) start from: namespaces of their own beyond the
# mount one, read-only /usr with the usual top-level links into it, a minimal /dev
# and a private /tmp.
_UNSHARE = ("--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
_SYSTEM = (
    *("--ro-bind", "/usr", "/usr"),
    *("--symlink", "usr/lib", "/lib"),
    *("--symlink", "usr/lib64", "/lib64"),
    *("--symlink", "usr/bin", "/bin"),
    *("--symlink", "usr/sbin", "/sbin"),
    *("--dev", "/dev"),
    *("--tmpfs", "/tmp"),
)


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if p != Path("/")]


def jail_argv(argv: Sequence[str], jail: Jail) -> list[str]:
    """``argv`` (QEMU's) run inside ``jail``: bwrap, then setpriv, then QEMU with -sandbox."""
    out = [
        jail.bwrap,
        *_UNSHARE,
        # A new session: QEMU cannot push input into a terminal hangard has (TIOCSTI).
        "--new-session",
        *_SYSTEM,
    ]
    made: set[Path] = {Path("/dev"), Path("/tmp")}
    shown: list[Path] = [Path("/usr")]

    def visible(path: Path) -> bool:
        return any(path.is_relative_to(tree) for tree in shown)

    def parents(path: Path) -> list[str]:
        # bwrap would make missing parents 0700 root, which the QEMU uid cannot
        # traverse: make them 0755 first (they are empty in the namespace).
        dirs: list[str] = []
        for parent in _parents(path):
            if parent not in made and not visible(parent):
                dirs += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        return dirs

    for path in jail.writable:
        if not visible(path):
            out += [*parents(path), "--bind", str(path), str(path)]
            shown.append(path)
    for path in jail.readable:
        if not visible(path):
            out += [*parents(path), "--ro-bind", str(path), str(path)]
            shown.append(path)
    for node, seen_as in jail.devices:
        out += [*parents(seen_as), "--dev-bind", str(node), str(seen_as)]
    out += [
        # bwrap keeps only what setpriv needs to become the QEMU uid and to clear the
        # bounding set (CAP_SETPCAP); setpriv then drops those too. One --cap-add per
        # capability: bwrap reads "A,B" as A alone.
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        "--cap-add",
        "CAP_SETPCAP",
        "--",
        jail.setpriv,
        f"--reuid={jail.uid}",
        f"--regid={jail.uid}",
        f"--groups={QEMU_GID}",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        argv[0],
        "-sandbox",
        SECCOMP,
        *argv[1:],
    ]
    return out


def dnsmasq_jail_argv(argv: Sequence[str], conf: Path, shared: Path) -> list[str]:
    """``argv`` (dnsmasq's) in a mount namespace of its own: read-only /usr, the user and
    group databases (its ``user=`` is a name), the resolver config (upstream DNS of a
    nat network), its read-only config file and its own ``shared`` folder. It starts as
    root to bind port 53 and 67 on the bridge, then drops to nobody itself; hangard's
    database, the VMs' files and the rest of the host are not there to reach."""
    out = ["/usr/bin/bwrap", *_UNSHARE, *_SYSTEM]
    for etc in ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/resolv.conf"):
        out += ["--ro-bind-try", etc, etc]
    made: set[Path] = set()
    binds: tuple[tuple[Path, str], ...] = ((conf, "--ro-bind"), (shared, "--bind"))
    for path, flag in binds:
        for parent in _parents(path):
            if parent not in made:
                out += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        out += [flag, str(path), str(path)]
    return [*out, "--", *argv]
