"""The sandbox prefix QEMU runs under (hangar/services/qemu/jail.py)."""

from __future__ import annotations

from pathlib import Path

from hangar.services.qemu.jail import QEMU_GID, QEMU_UID_BASE, SECCOMP, Jail, jail_argv

GOLDEN = Path(__file__).parents[1] / "golden" / "jail-vm.txt"
QEMU = ["/usr/bin/qemu-system-x86_64", "-name", "web", "-m", "64M"]
JAIL = Jail(
    uid=QEMU_UID_BASE + 7,
    writable=(Path("/h/lib/vms/abc"), Path("/h/run/vm/abc"), Path("/h/lib/pools/p/v.qcow2")),
    readable=(
        Path("/h/lib/images/tiny/disk.qcow2"),
        Path("/h/lib/images/tiny/vmlinuz"),
        Path("/h/lib/vms/abc/snapshots/s1/layer.qcow2"),  # in a writable folder already
        Path("/usr/share/OVMF/OVMF_CODE.fd"),  # under /usr already
    ),
    devices=((Path("/h/lib/vms/abc/dev/tun"), Path("/dev/net/tun")),),
)


def test_argv_matches_golden() -> None:
    assert "\n".join(jail_argv(QEMU, JAIL)) + "\n" == GOLDEN.read_text()


def test_qemu_runs_last_with_its_seccomp_filter() -> None:
    argv = jail_argv(QEMU, JAIL)
    start = argv.index(QEMU[0])
    assert argv[start:] == [QEMU[0], "-sandbox", SECCOMP, *QEMU[1:]]
    assert "elevateprivileges=deny" in SECCOMP and "spawn=deny" in SECCOMP


def test_privileges_are_dropped_for_good() -> None:
    argv = jail_argv(QEMU, JAIL)
    priv = argv[argv.index("/usr/bin/setpriv") : argv.index(QEMU[0])]
    assert f"--reuid={QEMU_UID_BASE + 7}" in priv and f"--regid={QEMU_UID_BASE + 7}" in priv
    assert f"--groups={QEMU_GID}" in priv
    for flag in ("--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"):
        assert flag in priv
    # bwrap keeps only what setpriv needs, one capability per flag.
    bwrap = argv[: argv.index("/usr/bin/setpriv")]
    kept = [bwrap[i + 1] for i, a in enumerate(bwrap) if a == "--cap-add"]
    assert kept == ["CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"]
    assert bwrap[bwrap.index("--cap-drop") + 1] == "ALL"


def test_only_the_vms_own_files_are_mounted() -> None:
    argv = jail_argv(QEMU, JAIL)
    binds = [(argv[i], argv[i + 1]) for i, a in enumerate(argv) if a.endswith("bind")]
    assert ("--bind", "/h/lib/vms/abc") in binds
    assert ("--ro-bind", "/h/lib/images/tiny/disk.qcow2") in binds
    assert ("--bind", "/h/lib") not in binds and ("--ro-bind", "/") not in binds
    # Parents the QEMU uid must traverse are made 0755; none is the host's own folder.
    for i, arg in enumerate(argv):
        if arg == "--dir":
            assert argv[i - 2 : i] == ["--perms", "0755"]
    assert "--unshare-net" not in argv and "--unshare-pid" not in argv  # taps, -pidfile
