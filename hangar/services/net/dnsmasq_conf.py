"""dnsmasq configuration for one managed network. Pure: golden-file tested.

The main file never changes while the network exists; the per-VM parts (DHCP
reservations, DNS names) live in two side files that dnsmasq re-reads on
SIGHUP, so adding or removing a VM never restarts dnsmasq (leases stay put).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hangar.spec.network import AttachedNic, NetworkConfig

DNSMASQ_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DnsmasqFiles:
    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "dnsmasq.conf"

    @property
    def pidfile(self) -> Path:
        return self.dir / "dnsmasq.pid"

    @property
    def leases(self) -> Path:
        return self.dir / "dnsmasq.leases"

    @property
    def hostsfile(self) -> Path:
        """DHCP reservations: MAC,IP,NAME per line."""
        return self.dir / "dhcp-hosts"

    @property
    def addn_hosts(self) -> Path:
        """DNS names: IP NAME.NETWORK NAME per line."""
        return self.dir / "dns-hosts"


def render_conf(network: NetworkConfig, files: DnsmasqFiles) -> str:
    """The dnsmasq.conf of a nat or isolated network."""
    assert network.subnet is not None and network.gateway is not None
    subnet = ipaddress.IPv4Network(network.subnet)
    lines = [
        f"# hangar dnsmasq config, format {DNSMASQ_FORMAT_VERSION}: network {network.name}",
        f"# ({network.type}, {network.subnet}). Rendered by hangar; edits are overwritten.",
        f"interface={network.bridge}",
        # Listen on the bridge only, never on the host's other interfaces.
        "bind-interfaces",
        "except-interface=lo",
        f"listen-address={network.gateway}",
        f"pid-file={files.pidfile}",
        f"dhcp-leasefile={files.leases}",
        # "static": only NICs hangar knows (a reservation per MAC) get a lease;
        # anti-spoofing would drop anything else anyway.
        f"dhcp-range={subnet.network_address},static,{subnet.netmask},1h",
        f"dhcp-hostsfile={files.hostsfile}",
        f"addn-hosts={files.addn_hosts}",
        "dhcp-authoritative",
        # The network's name is its DNS domain: VM.NETWORK resolves inside it.
        f"domain={network.name}",
        f"local=/{network.name}/",
        "no-hosts",
        f"dhcp-option=option:dns-server,{network.gateway}",
    ]
    if network.type == "nat":
        lines.append(f"dhcp-option=option:router,{network.gateway}")
    else:
        # Isolated: no default route is offered, and names outside the network
        # are not looked up anywhere.
        lines += ["dhcp-option=option:router", "no-resolv"]
    # dnsmasq re-reads the side files on SIGHUP as the user it runs as; the
    # state folder is root-only, so it keeps root (it listens on the bridge only).
    lines += ["user=root", "group=root", ""]
    return "\n".join(lines)


def render_dhcp_hosts(nics: Iterable[AttachedNic]) -> str:
    return "".join(f"{n.mac},{n.ip},{n.vm}\n" for n in sorted(nics, key=_key) if n.ip)


def render_dns_hosts(network: NetworkConfig, nics: Iterable[AttachedNic]) -> str:
    return "".join(f"{n.ip} {n.vm}.{network.name} {n.vm}\n" for n in sorted(nics, key=_key) if n.ip)


def _key(nic: AttachedNic) -> tuple[str, str]:
    return (nic.vm, nic.tap)


@dataclass(frozen=True)
class Lease:
    expires: int
    mac: str
    ip: str
    hostname: str


def parse_leases(text: str) -> list[Lease]:
    """dnsmasq's lease file: ``EXPIRY MAC IP HOSTNAME CLIENT-ID`` per line."""
    leases = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            leases.append(Lease(int(parts[0]), parts[1].lower(), parts[2], parts[3]))
    return leases
