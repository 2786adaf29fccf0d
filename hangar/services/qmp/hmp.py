"""The human monitor (HMP) commands hangar still sends, one typed function each.

HMP is QEMU's text console, reached over QMP with ``human-monitor-command``: a
command line QEMU splits at spaces, then at ``:``/``-``/``,`` as each command
parses its words. Only what QEMU 7.2 cannot do over QMP goes through here, and
every function checks each value it puts into the line, so that no caller's text
(a VM's port forward comes from a tenant) can add words or options to it.
HMP reports errors as printed text, not as QMP errors: a command that prints
anything but its success message failed.
"""

from __future__ import annotations

import ipaddress
import re

from hangar.errors import InvalidInput, QemuFailed
from hangar.services.qmp.monitor import Monitor
from hangar.spec.vm import PortForward

# hangar's user-mode netdev ids (services/qemu/argv.py: net<slot>).
_NETDEV = re.compile(r"net[0-9]{1,3}")


async def hostfwd_add(
    monitor: Monitor, netdev: str, fwd: PortForward, guest_address: str | None
) -> None:
    """Forward host port ``fwd`` to the guest behind user-mode (slirp) NIC ``netdev``,
    on a running VM (``guest_address``: the guest's address, None: slirp's first).

    HMP only: QEMU 7.2 has no QMP command to change a running slirp netdev's
    forwards (they are -netdev user,hostfwd= options; replacing the netdev would
    drop the guest's connections and lease).
    """
    guest = "" if guest_address is None else _ipv4(guest_address, "guest address")
    rule = f"{_host(fwd)}-{guest}:{_port(fwd.guest_port)}"
    await _run(monitor, f"hostfwd_add {_netdev(netdev)} {rule}")


async def hostfwd_remove(monitor: Monitor, netdev: str, fwd: PortForward) -> None:
    """Remove the host side of forward ``fwd`` from user-mode NIC ``netdev``.

    HMP only, as :func:`hostfwd_add`.
    """
    host = _host(fwd)
    # The one HMP command here that prints on success too (QEMU 7.2's net/slirp.c).
    await _run(
        monitor,
        f"hostfwd_remove {_netdev(netdev)} {host}",
        f"host forwarding rule for {host} removed",
    )


def _host(fwd: PortForward) -> str:
    """PROTO:HOSTADDR:HOSTPORT, slirp's spelling of a forward's host side."""
    if fwd.protocol not in ("tcp", "udp"):
        raise InvalidInput(f"port forward protocol '{fwd.protocol}' is not tcp or udp")
    return f"{fwd.protocol}:{_ipv4(fwd.host_address, 'host address')}:{_port(fwd.host_port)}"


def _netdev(netdev: str) -> str:
    if not _NETDEV.fullmatch(netdev):
        raise InvalidInput(f"'{netdev}' is not one of hangar's netdev ids")
    return netdev


def _ipv4(value: str, what: str) -> str:
    # The dotted form only: ipaddress also reads what QEMU's parser would not.
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(f"port forward {what} '{value}' is not an IPv4 address") from None
    if str(address) != value:
        raise InvalidInput(f"port forward {what} '{value}' is not an IPv4 address")
    return value


def _port(value: int) -> str:
    if type(value) is not int or not 1 <= value <= 65535:
        raise InvalidInput(f"port '{value}' is not a port number")
    return str(value)


async def _run(monitor: Monitor, line: str, success: str = "") -> None:
    said = str(await monitor.execute("human-monitor-command", {"command-line": line}) or "")
    if said.strip() != success:
        raise QemuFailed(f"QEMU refused '{line}': {said.strip()}")
