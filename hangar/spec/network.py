"""Virtual networks: what a user asks for, and the resolved config hangar runs.

A network is a Linux bridge (the virtual switch) plus, for ``nat`` and
``isolated``, a dnsmasq serving DHCP and DNS and an nftables ruleset. ``bridged``
networks put NICs on a bridge that already exists on the host. Everything
here is pure: host facts (interfaces, addresses in use) arrive as arguments.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hangar.errors import Conflict, Forbidden, InvalidInput, NextStep, NotFound
from hangar.names import check_name

NETWORK_FORMAT_VERSION = 1
# The project of a network resolved without one (the default project).
DEFAULT_PROJECT = "default"
NetworkType = Literal["nat", "isolated", "bridged"]
Policy = Literal["allow", "deny"]
# Subnets hangar picks when the user names none: 10.77.0.0/24, 10.77.1.0/24, ...
AUTO_SUBNET_BASE = ipaddress.IPv4Network("10.77.0.0/16")
# Linux interface names are at most 15 characters: bridge and tap names are
# derived from ids, never from user-chosen names.
BRIDGE_PREFIX = "hgb"
TAP_PREFIX = "hgt"


class NetworkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: NetworkType
    subnet: str | None = None
    # nat: the interface traffic leaves by (masquerade); bridged: the host bridge to join.
    uplink: str | None = None
    # What reaches a guest from outside its own rules when no rule matches.
    default_inbound: Policy = "allow"
    # isolated: let guests reach the host itself (not only its DHCP and DNS).
    host_access: bool = False


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = NETWORK_FORMAT_VERSION
    id: str
    # Names are unique per project; peers, NICs and forwards name networks of their own
    # project. Subnets and host port forwards are host-wide: they never overlap.
    project: str = DEFAULT_PROJECT
    name: str
    type: NetworkType
    bridge: str
    # Managed networks (nat, isolated) only: hangar owns the subnet and the bridge.
    subnet: str | None
    gateway: str | None
    uplink: str | None
    default_inbound: Policy
    host_access: bool
    # Managed networks of the same project whose guests may reach this one's (both
    # sides list each other).
    peers: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        """hangar made the bridge and runs dnsmasq for it (nat, isolated)."""
        return self.type != "bridged"

    @property
    def prefixlen(self) -> int:
        assert self.subnet is not None
        return ipaddress.IPv4Network(self.subnet).prefixlen


class ForwardCreate(BaseModel):
    """Forward ``host_address:host_port`` (on hangard's host) to ``vm:vm_port``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host_port: int = Field(ge=1, le=65535)
    vm: str
    vm_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    # 0.0.0.0: every local address of the host (the point is to reach the VM from outside).
    host_address: str = "0.0.0.0"


class Forward(ForwardCreate):
    id: int
    project: str
    network: str
    vm_ip: str


class FirewallRuleCreate(BaseModel):
    """Allow or deny traffic to (``in``) or from (``out``) one VM."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vm: str
    direction: Literal["in", "out"]
    action: Policy
    protocol: Literal["tcp", "udp", "icmp", "any"] = "any"
    port: int | None = Field(default=None, ge=1, le=65535)
    # The peer's addresses: the source for "in", the destination for "out".
    cidr: str | None = None


class FirewallRule(FirewallRuleCreate):
    id: int
    project: str
    # Rules follow the VM by id: VM names are unique only within a project.
    vm_id: str


class AttachedNic(BaseModel):
    """One VM NIC on a network, as the renderers need it.

    ``vm`` and ``network`` are names (unique within the network's project, so a
    network's NICs never share a VM name); the ids identify them host-wide.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vm: str
    vm_id: str
    network: str
    network_id: str
    tap: str
    mac: str
    ip: str | None


def bridge_name(network_id: str) -> str:
    return f"{BRIDGE_PREFIX}{network_id[:10]}"


def tap_name(vm_id: str, index: int) -> str:
    return f"{TAP_PREFIX}{vm_id[:9]}{index:x}"[:15]


def _subnet(text: str) -> ipaddress.IPv4Network:
    hint = "write a private IPv4 subnet between /16 and /29, e.g. 10.77.5.0/24"
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"subnet '{text}' is not an IPv4 network: {exc}", hint=hint) from exc
    if not net.is_private or net.is_loopback or net.is_link_local:
        raise InvalidInput(f"subnet '{text}' is not a private network", hint=hint)
    if not 16 <= net.prefixlen <= 29:
        raise InvalidInput(f"subnet '{text}' has prefix /{net.prefixlen}", hint=hint)
    return net


def resolve_network(
    request: NetworkCreate,
    *,
    network_id: str,
    project: str = DEFAULT_PROJECT,
    existing: Iterable[NetworkConfig],
    host_subnets: Iterable[str],
    host_interfaces: Collection[str],
    host_bridges: Collection[str],
    allowed_uplinks: Collection[str] | None = None,
) -> NetworkConfig:
    """Check a request against the networks and host interfaces there are; fill defaults.

    ``existing`` is every project's networks: names must be unique in ``project``,
    subnets on the whole host. Another project's network is never named in an error.
    ``allowed_uplinks``: the host interfaces the project may use as an uplink (None:
    any, for the host administrator); a project is never told which others exist.
    Raises :class:`InvalidInput` (bad subnet, missing or wrong options),
    :class:`Conflict` (name taken, subnet overlaps) or :class:`NotFound` (uplink).
    """
    check_name(request.name, what="network name")
    others = list(existing)
    if any(n.project == project and n.name == request.name for n in others):
        raise Conflict(
            f"a network named '{request.name}' already exists in project '{project}'",
            hint="pick another name, or delete the existing network first",
        )
    if request.uplink is not None:
        _check_uplink_allowed(request, project, others, allowed_uplinks)
    if request.type == "bridged":
        if request.subnet:
            raise InvalidInput(
                "a bridged network takes no subnet: addresses come from the host's LAN",
                hint="leave the subnet out",
            )
        if not request.uplink:
            raise InvalidInput(
                "a bridged network needs an uplink: the host bridge to join",
                hint="name an existing host bridge as its uplink, e.g. br0",
            )
        if request.uplink not in host_bridges:
            what = "is not a bridge" if request.uplink in host_interfaces else "does not exist"
            raise NotFound(
                f"host interface '{request.uplink}' {what}",
                hint="create a bridge with the interface as a port (ip link add br0 type "
                "bridge; ip link set eth0 master br0) and name br0 as the uplink",
            )
        return NetworkConfig(
            id=network_id,
            project=project,
            name=request.name,
            type="bridged",
            bridge=request.uplink,
            subnet=None,
            gateway=None,
            uplink=request.uplink,
            default_inbound=request.default_inbound,
            host_access=request.host_access,
        )
    if request.uplink is not None:
        if request.type == "isolated":
            raise InvalidInput(
                "an isolated network has no uplink",
                hint="leave the uplink out, or make it a nat network",
            )
        if request.uplink not in host_interfaces:
            raise NotFound(
                f"uplink interface '{request.uplink}' does not exist on the host",
                hint="'ip link' lists the host's interfaces",
            )
    taken = [ipaddress.IPv4Network(n.subnet) for n in others if n.subnet]
    taken += [ipaddress.IPv4Interface(a).network for a in host_subnets]
    if request.subnet:
        subnet = _subnet(request.subnet)
        for other in others:
            if other.subnet and ipaddress.IPv4Network(other.subnet).overlaps(subnet):
                whose = (
                    f"network '{other.name}' ({other.subnet})"
                    if other.project == project
                    else "a network of another project"
                )
                raise Conflict(
                    f"subnet {subnet} overlaps {whose}",
                    hint="pick a subnet no other network uses (subnets are unique on the host)",
                )
        for net in taken:
            if net.overlaps(subnet):
                raise Conflict(
                    f"subnet {subnet} overlaps {net}, already on a host interface",
                    hint="pick a subnet the host does not use",
                )
    else:
        free = (
            s
            for s in AUTO_SUBNET_BASE.subnets(new_prefix=24)
            if not any(s.overlaps(t) for t in taken)
        )
        found = next(free, None)
        if found is None:
            raise Conflict("no free subnet left in 10.77.0.0/16", hint="give a subnet")
        subnet = found
    return NetworkConfig(
        id=network_id,
        project=project,
        name=request.name,
        type=request.type,
        bridge=bridge_name(network_id),
        subnet=str(subnet),
        gateway=str(next(subnet.hosts())),
        uplink=request.uplink,
        default_inbound=request.default_inbound,
        host_access=request.host_access,
    )


def allocate_ip(network: NetworkConfig, used: Collection[str], wanted: str | None) -> str:
    """The address a NIC gets on ``network``: ``wanted`` if free, else the lowest free one.

    Every NIC on a managed network has a fixed address (a DHCP reservation), so
    anti-spoofing rules can name it. Raises :class:`InvalidInput` or :class:`Conflict`.
    """
    assert network.subnet is not None and network.gateway is not None
    subnet = ipaddress.IPv4Network(network.subnet)
    reserved = {network.gateway, *used}
    if wanted is not None:
        try:
            addr = ipaddress.IPv4Address(wanted)
        except ValueError as exc:
            raise InvalidInput(
                f"address '{wanted}' is not an IPv4 address", hint="e.g. 10.77.0.20"
            ) from exc
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise InvalidInput(
                f"address {addr} is not a host address of network '{network.name}' ({subnet})",
                hint=f"pick an address inside {subnet}",
            )
        if str(addr) in reserved:
            raise Conflict(
                f"address {addr} is already used on network '{network.name}'",
                hint="pick another address, or none to get a free one",
            )
        return str(addr)
    for host in subnet.hosts():
        if str(host) not in reserved:
            return str(host)
    raise Conflict(
        f"network '{network.name}' ({subnet}) has no free address left",
        hint="delete a VM on it, or create a network with a larger subnet",
    )


def check_cidr(text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError as exc:
        raise InvalidInput(
            f"'{text}' is not an IPv4 address or CIDR", hint="e.g. 10.0.0.0/8"
        ) from exc


def check_host_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError as exc:
        raise InvalidInput(
            f"host address '{text}' is not an IPv4 address", hint="e.g. 192.0.2.10, or leave it out"
        ) from exc


def _check_uplink_allowed(
    request: NetworkCreate,
    project: str,
    others: list[NetworkConfig],
    allowed: Collection[str] | None,
) -> None:
    """A bridge hangar made for a nat or isolated network is that network's, whoever
    asks (joining it would put a VM on another network, maybe another project's); any
    other uplink must be one the host administrator allowed the project."""
    assert request.uplink is not None
    if any(n.bridge == request.uplink and n.type != "bridged" for n in others):
        raise Conflict(
            f"'{request.uplink}' is the bridge of a hangar network, not an uplink",
            hint="attach VMs to that network instead",
        )
    if allowed is not None and request.uplink not in allowed:
        raise Forbidden(
            f"project '{project}' may not use host interface '{request.uplink}' as an uplink",
            hint="the host administrator allows uplinks per project",
            details={"project": project},
            action=NextStep.SET_UPLINKS,
        )
