"""Applying rendered network configuration to the host: nftables and dnsmasq.

dnsmasq daemonizes itself, so it outlives hangard like QEMU does; on start
hangard adopts a dnsmasq whose pid file points at a live process started with
this network's config file, and starts one otherwise.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import select
import signal
import time
from pathlib import Path

from hangar.errors import HostCommandFailed
from hangar.host.sockets import read_small_file
from hangar.runner import CommandRunner
from hangar.services.net.dnsmasq_conf import (
    DNSMASQ_USER,
    DnsmasqFiles,
    parse_leases,
    render_conf,
    render_dhcp_hosts,
    render_dns_hosts,
)
from hangar.services.qemu.jail import dnsmasq_jail_argv
from hangar.spec.network import AttachedNic, NetworkConfig

DNSMASQ = "dnsmasq"
STOP_TIMEOUT = 5.0


def apply_ruleset(runner: CommandRunner, script: str) -> None:
    """Load a rendered ruleset with ``nft -f -``: one transaction, all or nothing."""
    runner.run(["nft", "-f", "-"], input_text=script, timeout=30)


def list_tables(runner: CommandRunner) -> list[str]:
    """``FAMILY NAME`` of every nftables table in hangard's namespace."""
    out = runner.run(["nft", "list", "tables"], timeout=30).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


def write_atomically(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it. True when it changed."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def dnsmasq_pid(files: DnsmasqFiles) -> int | None:
    """The pid of this network's running dnsmasq, or None.

    The pid file alone is not trusted (pids are reused): the process must be a
    dnsmasq started with this network's config file.
    """
    try:
        pid = int(read_small_file(files.pidfile).strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if (
        cmdline
        and cmdline[0].endswith(DNSMASQ.encode())
        and (f"--conf-file={files.conf}".encode() in cmdline)
    ):
        return pid
    return None


def start_dnsmasq(runner: CommandRunner, files: DnsmasqFiles) -> int:
    """Start (or adopt) this network's dnsmasq; returns its pid."""
    pid = dnsmasq_pid(files)
    if pid is not None:
        return pid
    files.pidfile.unlink(missing_ok=True)
    argv = [DNSMASQ, f"--conf-file={files.conf}"]
    if files.sandboxed:
        _give_to_dnsmasq(files)
        argv = dnsmasq_jail_argv(argv, files.conf, files.shared)
    # dnsmasq forks into the background once it is listening, so by the time
    # this returns DHCP is served; its exit status reports config errors.
    runner.run(argv, timeout=30)
    deadline = time.monotonic() + STOP_TIMEOUT
    while (pid := dnsmasq_pid(files)) is None:
        if time.monotonic() > deadline:
            raise HostCommandFailed(
                [DNSMASQ, f"--conf-file={files.conf}"], 1, "dnsmasq wrote no pid file"
            )
        time.sleep(0.02)
    return pid


def _give_to_dnsmasq(files: DnsmasqFiles) -> None:
    """The shared folder and what is in it: DNSMASQ_USER's alone (0700/0600)."""
    user = pwd.getpwnam(DNSMASQ_USER)
    files.shared.mkdir(mode=0o700, exist_ok=True)
    for path in (files.shared, *files.shared.iterdir()):
        if not path.is_symlink():
            os.chown(path, user.pw_uid, user.pw_gid)


def dnsmasq_group() -> str:
    """The name of DNSMASQ_USER's own group (dnsmasq's ``group=`` takes a name)."""
    return grp.getgrgid(pwd.getpwnam(DNSMASQ_USER).pw_gid).gr_name


def reload_dnsmasq(files: DnsmasqFiles) -> None:
    """SIGHUP: dnsmasq re-reads its DHCP reservations and DNS names."""
    pid = dnsmasq_pid(files)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)


def stop_dnsmasq(files: DnsmasqFiles) -> None:
    pid = dnsmasq_pid(files)
    if pid is None:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        files.pidfile.unlink(missing_ok=True)
        return
    try:
        # Wait on a pidfd, not on the pid file or /proc: dnsmasq removes its
        # pid file, and the kernel empties /proc/PID/cmdline, before the
        # process has closed its sockets; a pidfd turns readable only after.
        # Until then a new dnsmasq could not bind the network's address.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
            if select.select([pidfd], [], [], STOP_TIMEOUT)[0]:
                break
    finally:
        os.close(pidfd)
    files.pidfile.unlink(missing_ok=True)


def sync_dnsmasq(
    runner: CommandRunner, net: NetworkConfig, files: DnsmasqFiles, nics: list[AttachedNic]
) -> None:
    """Write a network's dnsmasq files for ``nics`` and make a running dnsmasq use them."""
    files.dir.mkdir(parents=True, exist_ok=True)
    files.shared.mkdir(exist_ok=True)
    mine = [n for n in nics if n.network_id == net.id]
    group = dnsmasq_group() if files.sandboxed else "root"
    write_atomically(files.conf, render_conf(net, files, group))
    changed = write_atomically(files.hostsfile, render_dhcp_hosts(mine))
    changed |= write_atomically(files.addn_hosts, render_dns_hosts(net, mine))
    if files.sandboxed:
        _give_to_dnsmasq(files)  # it re-reads them on SIGHUP as nobody
    if _drop_stale_leases(runner, files, {n.mac for n in mine}):
        return
    if changed:
        reload_dnsmasq(files)


def _drop_stale_leases(runner: CommandRunner, files: DnsmasqFiles, macs: set[str]) -> bool:
    """Forget the leases of NICs that are gone, restarting dnsmasq if it holds any.

    dnsmasq will not hand a reserved address to a new MAC while an old lease
    on it lasts (an hour), so a deleted VM's address could not be reused.
    dnsmasq reads its lease file only when it starts, and SIGHUP does not
    drop leases: so rewrite the file and restart it (a few ms; DHCP clients
    retry). True when it restarted.
    """
    try:
        text = files.leases.read_text()
    except FileNotFoundError:
        return False
    lines = text.splitlines(keepends=True)
    keep = [line for line in lines if all(le.mac in macs for le in parse_leases(line))]
    if len(keep) == len(lines):
        return False
    was_running = dnsmasq_pid(files) is not None
    stop_dnsmasq(files)
    write_atomically(files.leases, "".join(keep))
    if files.sandboxed:
        _give_to_dnsmasq(files)
    if was_running:
        start_dnsmasq(runner, files)
    return True
