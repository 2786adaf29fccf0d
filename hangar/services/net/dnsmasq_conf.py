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


# The user a sandboxed dnsmasq drops to once it has bound its sockets. dnsmasq takes
# names only (getpwnam), so not a numeric id: nobody, which every system has.
DNSMASQ_USER = "nobody"


@dataclass(frozen=True)
class DnsmasqFiles:
    dir: Path
    # Sandboxed (services/qemu/jail.py dnsmasq_jail_argv): what dnsmasq reads or
    # writes after dropping to DNSMASQ_USER lives in a folder of that user's
    # (``shared``), the only one its namespace mounts read-write; the config stays
    # root's, read once at start as root.
    sandboxed: bool = False

    @property
    def shared(self) -> Path:
        return self.dir / "dnsmasq" if self.sandboxed else self.dir

    @property
    def conf(self) -> Path:
        return self.dir / "dnsmasq.conf"

    @property
    def pidfile(self) -> Path:
        return self.shared / "dnsmasq.pid"

    @property
    def leases(self) -> Path:
        return self.shared / "dnsmasq.leases"

    @property
    def hostsfile(self) -> Path:
        """DHCP reservations: MAC,IP,NAME per line."""
        return self.shared / "dhcp-hosts"

    @property
    def addn_hosts(self) -> Path:
        """DNS names: IP NAME.NETWORK NAME per line."""
        return self.shared / "dns-hosts"


def render_conf(network: NetworkConfig, files: DnsmasqFiles, group: str = "nogroup") -> str:
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
    if files.sandboxed:
        # It binds its sockets as root, then drops to nobody (keeping only the
        # capabilities DHCP needs); it re-reads the side files on SIGHUP as nobody.
        # ``group``: nobody's own group, by name (Debian: nogroup).
        lines += [f"user={DNSMASQ_USER}", f"group={group}", ""]
    else:
        # Unsandboxed (tests' stand-in): it re-reads the side files on SIGHUP as the
        # user it runs as, and the state folder is root-only.
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
