"""Bridges and taps in hangard's own network namespace, through netlink (pyroute2).

Every function is idempotent: making what exists, or removing what is gone,
is not an error. That is what lets a failed step be reverted and a restart
re-apply everything without checking first.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hangar.errors import HostCommandFailed

_EEXIST = 17
_ENODEV = 19


@dataclass(frozen=True)
class HostInterfaces:
    """What the host's (namespace's) interfaces are, for checking requests."""

    names: frozenset[str]
    bridges: frozenset[str]
    # Every IPv4 address with its prefix, e.g. "192.0.2.1/24".
    addresses: tuple[str, ...]


class LinkOps(Protocol):
    """What the network service does with links. This module is the real one; tests
    pass an in-memory fake (tests/support/fake_links.py) where no namespace of their
    own is at hand."""

    def interfaces(self) -> HostInterfaces: ...

    def ensure_bridge(self, name: str, address: str | None, prefixlen: int | None) -> None: ...

    def ensure_tap(self, name: str, bridge: str) -> None: ...

    def remove_link(self, name: str) -> None: ...

    def enable_forwarding(self) -> None: ...


def _fail(what: str, exc: NetlinkError) -> HostCommandFailed:
    return HostCommandFailed(
        ["netlink", what], exc.code, str(exc), hint="see hangard's log; is hangard root?"
    )


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def interfaces() -> HostInterfaces:
    with IPRoute() as ipr:
        names, bridges = set(), set()
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            names.add(name)
            info = link.get_attr("IFLA_LINKINFO")
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "bridge":
                bridges.add(name)
        addresses = tuple(
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(family=2)
        )
    return HostInterfaces(frozenset(names), frozenset(bridges), addresses)


def ensure_bridge(name: str, address: str | None, prefixlen: int | None) -> None:
    """A bridge named ``name``, up, with ``address/prefixlen`` on it (the gateway)."""
    with IPRoute() as ipr:
        try:
            if _index(ipr, name) is None:
                # No STP, no forwarding delay: a tap is usable the moment it is added.
                ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            idx = _index(ipr, name)
            assert idx is not None
            if address is not None and prefixlen is not None:
                with contextlib.suppress(NetlinkError):  # EEXIST: already there
                    ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
            ipr.link("set", index=idx, state="up")
        except NetlinkError as exc:
            raise _fail(f"create bridge {name}", exc) from exc


def ensure_tap(name: str, bridge: str) -> None:
    """A persistent tap named ``name``, up, as a port of ``bridge``. QEMU opens it later."""
    with IPRoute() as ipr:
        try:
            if _index(ipr, name) is None:
                ipr.link("add", ifname=name, kind="tuntap", mode="tap")
            idx = _index(ipr, name)
            master = _index(ipr, bridge)
            if idx is None or master is None:
                raise HostCommandFailed(
                    ["netlink", f"attach {name} to {bridge}"], 1, f"{bridge} or {name} vanished"
                )
            ipr.link("set", index=idx, master=master, state="up")
        except NetlinkError as exc:
            raise _fail(f"create tap {name} on {bridge}", exc) from exc


def remove_link(name: str) -> None:
    """Delete a bridge or tap; gone already is fine."""
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return
        try:
            ipr.link("del", index=idx)
        except NetlinkError as exc:
            if exc.code != _ENODEV:
                raise _fail(f"delete {name}", exc) from exc


def links_with_prefix(*prefixes: str) -> list[str]:
    with IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return sorted(n for n in names if n.startswith(prefixes))


def enable_forwarding() -> None:
    """IPv4 forwarding in hangard's namespace: nat networks route to their uplink."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1\n")


def host_subnets(host: HostInterfaces, own: set[str]) -> list[str]:
    """The host's IPv4 networks other than those on hangar's own bridges."""
    return [a for a in host.addresses if str(ipaddress.IPv4Interface(a).network) not in own]
