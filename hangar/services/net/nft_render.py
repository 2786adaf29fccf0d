"""The whole nftables ruleset of one hangard, rendered from its networks. Pure: golden-tested.

hangar owns two tables, ``bridge hangar`` and ``inet hangar``, and always
replaces both at once: the script first creates then deletes them (so the
delete never fails), then declares them afresh, and ``nft -f`` applies all of
it in one transaction. Applying the same state twice gives the same ruleset:
idempotent, and nothing of an old rule can linger.

* ``bridge hangar`` — anti-spoofing, per tap, before the bridge switches a
  frame: a guest may only send with its own MAC and (on managed networks) its
  own IPv4 address, only IPv4 and ARP, and no 802.1Q/802.1ad-tagged frames, so
  it cannot hop to another segment by tagging (this kernel has no VLAN
  filtering). The bridge family here has no conntrack, so stateful filtering
  lives in the inet table.
* ``inet hangar`` — segmentation between networks, per-VM firewall chains,
  port forwards (DNAT) and masquerade. With br_netfilter
  (bridge-nf-call-iptables=1) traffic between two guests on one bridge passes
  the inet forward hook too, so the per-VM rules also apply between neighbours.
  Guests are matched by address, which anti-spoofing makes trustworthy.

Networks of every project share the two tables: networks are told apart by id
(names are unique only within a project), VMs by id, and peers are looked up in
their network's own project. Subnets never overlap on one host, so addresses are
unique too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hangar.spec.network import (
    DEFAULT_PROJECT,
    AttachedNic,
    FirewallRule,
    Forward,
    NetworkConfig,
)

NFT_FORMAT_VERSION = 1
TABLE = "hangar"


@dataclass(frozen=True)
class NetState:
    """Everything the ruleset depends on."""

    networks: Sequence[NetworkConfig] = ()
    nics: Sequence[AttachedNic] = ()
    forwards: Sequence[Forward] = ()
    rules: Sequence[FirewallRule] = field(default_factory=tuple)


def render_ruleset(state: NetState) -> str:
    """The ``nft -f`` script that makes the host's hangar tables match ``state``."""
    networks = sorted(state.networks, key=lambda n: (n.project, n.name))
    by_id = {n.id: n for n in networks}
    nics = sorted(
        (n for n in state.nics if n.network_id in by_id),
        key=lambda n: (by_id[n.network_id].project, n.vm, n.tap),
    )
    out = [
        f"# hangar nftables ruleset, format {NFT_FORMAT_VERSION}. Rendered by hangar; "
        "edits are overwritten.",
        f"table bridge {TABLE}",
        f"delete table bridge {TABLE}",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
    ]
    if not networks:
        return "\n".join(out) + "\n"
    out += _bridge_table(nics, by_id)
    out += _inet_table(networks, nics, by_id, state)
    return "\n".join(out) + "\n"


def _label(nic: AttachedNic, net: NetworkConfig) -> str:
    """``VM on NETWORK`` for comments, with the project when it is not the default one."""
    where = "" if net.project == DEFAULT_PROJECT else f" (project {net.project})"
    return f"{nic.vm} on {nic.network}{where}"


def _peers(net: NetworkConfig, by_id: dict[str, NetworkConfig]) -> list[NetworkConfig]:
    """The managed networks ``net`` is peered with (peers are named within its project)."""
    by_name = {n.name: n for n in by_id.values() if n.project == net.project}
    return [by_name[p] for p in sorted(net.peers) if p in by_name and by_name[p].managed]


def _bridge_table(nics: Sequence[AttachedNic], by_id: dict[str, NetworkConfig]) -> list[str]:
    out = [
        "",
        f"table bridge {TABLE} {{",
        "    chain prerouting {",
        "        type filter hook prerouting priority -300; policy accept;",
    ]
    out += [f'        iifname "{n.tap}" jump from_{n.tap}' for n in nics]
    out.append("    }")
    for nic in nics:
        net = by_id[nic.network_id]
        managed = net.managed and nic.ip
        out += [
            "",
            f"    # {_label(nic, net)}: may send only as {nic.mac}"
            + (f" / {nic.ip}" if managed else ""),
            f"    chain from_{nic.tap} {{",
            f"        ether saddr != {nic.mac} drop",
            f"        ether type arp arp saddr ether != {nic.mac} drop",
        ]
        if managed:
            out += [
                f"        ether type arp arp saddr ip != {nic.ip} drop",
                # DHCP discover/request before the guest has its address.
                "        ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
                f"        ether type ip ip saddr != {nic.ip} drop",
                "        ether type { ip, arp } accept",
            ]
        else:
            out.append("        ether type { ip, arp, ip6 } accept")
        # Everything else: 802.1Q/802.1ad tags, other protocols (and IPv6 on
        # managed networks, which hangar gives no addresses).
        out += ["        drop", "    }"]
    out.append("}")
    return out


def _inet_table(
    networks: Sequence[NetworkConfig],
    nics: Sequence[AttachedNic],
    by_id: dict[str, NetworkConfig],
    state: NetState,
) -> list[str]:
    managed = [n for n in networks if n.managed]
    guarded = [n for n in nics if n.ip and by_id[n.network_id].managed]
    guarded_ips = {n.ip for n in guarded}
    out = ["", f"table inet {TABLE} {{"]

    # --- filter: segmentation first (drops only), then per-VM firewall ----------
    out += [
        "    chain forward {",
        "        type filter hook forward priority filter; policy accept;",
        "        ct state established,related accept",
    ]
    for net in managed:
        br = net.bridge
        # This network's own bridge and those of its peers.
        peers = _peers(net, by_id)
        own = _set([br, *(p.bridge for p in peers)])
        if net.type == "isolated":
            out += [
                f"        iifname {_q(br)} oifname != {own} drop",
                f"        oifname {_q(br)} iifname != {own} drop",
            ]
        else:
            # Into a nat network only from peers or through a port forward
            # (DNAT). Not "ct status != dnat": that compares the whole word.
            out.append(f"        oifname {_q(br)} iifname != {own} ct status & dnat == 0 drop")
            if net.uplink:
                out_ok = _set([br, *(p.bridge for p in peers), net.uplink])
                out.append(f"        iifname {_q(br)} oifname != {out_ok} drop")
    out += _vm_jumps(guarded, "daddr", "in")
    out += _vm_jumps(guarded, "saddr", "out")
    out.append("    }")

    out += [
        "",
        "    chain input {",
        "        type filter hook input priority filter; policy accept;",
        "        ct state established,related accept",
    ]
    for net in managed:
        if net.type == "isolated" and not net.host_access:
            br = net.bridge
            out += [
                f'        iifname "{br}" udp dport {{ 53, 67 }} accept',
                f'        iifname "{br}" tcp dport 53 accept',
                f'        iifname "{br}" drop',
            ]
    out += _vm_jumps(guarded, "saddr", "out")
    out += [
        "    }",
        "",
        "    chain output {",
        "        type filter hook output priority filter; policy accept;",
        "        ct state established,related accept",
    ]
    out += _vm_jumps(guarded, "daddr", "in")
    out.append("    }")

    for nic in guarded:
        net = by_id[nic.network_id]
        out += _vm_chain(nic, net, "in", net.default_inbound, state.rules)
        out += _vm_chain(nic, net, "out", "allow", state.rules)

    # --- nat: port forwards and masquerade --------------------------------------
    forwards = sorted(
        (f for f in state.forwards if f.vm_ip in guarded_ips),
        key=lambda f: (f.protocol, f.host_address, f.host_port),
    )
    dnat = [_dnat(f) for f in forwards]
    out += [
        "",
        "    chain prerouting_nat {",
        "        type nat hook prerouting priority dstnat; policy accept;",
        *dnat,
        "    }",
        "",
        "    # Forwards also answer connections made from the host itself.",
        "    chain output_nat {",
        "        type nat hook output priority -100; policy accept;",
        *dnat,
        "    }",
        "",
        "    chain postrouting_nat {",
        "        type nat hook postrouting priority srcnat; policy accept;",
    ]
    for net in managed:
        if net.type != "nat":
            continue
        # Leaving the network (not to its own guests or a peer's) means masquerade.
        peer_subnets = [p.subnet for p in _peers(net, by_id)]
        local = [net.subnet or "", *sorted(s for s in peer_subnets if s)]
        rule = f"        ip saddr {net.subnet} ip daddr != {_set(local, quote=False)}"
        if net.uplink:
            rule += f' oifname "{net.uplink}"'
        out.append(rule + " masquerade")
    out += ["    }", "}"]
    return out


def _q(name: str) -> str:
    return f'"{name}"'


def _set(items: Sequence[str], *, quote: bool = True) -> str:
    """One item as itself, several as an anonymous nft set."""
    values = [_q(i) if quote else i for i in items]
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _vm_jumps(nics: Sequence[AttachedNic], field: str, direction: str) -> list[str]:
    return [f"        ip {field} {n.ip} jump {direction}_{n.tap}" for n in nics]


def _vm_chain(
    nic: AttachedNic,
    net: NetworkConfig,
    direction: str,
    default: str,
    rules: Sequence[FirewallRule],
) -> list[str]:
    out = [
        "",
        f"    # {_label(nic, net)}: {direction}bound",
        f"    chain {direction}_{nic.tap} {{",
    ]
    peer = "saddr" if direction == "in" else "daddr"
    for rule in sorted(rules, key=lambda r: r.id):
        if rule.vm_id != nic.vm_id or rule.direction != direction:
            continue
        match = []
        if rule.cidr:
            match.append(f"ip {peer} {rule.cidr}")
        if rule.protocol != "any":
            match.append(f"meta l4proto {rule.protocol}")
        if rule.port is not None:
            match.append(f"th dport {rule.port}")
        # allow = leave this VM's chain (the other side's rules still apply).
        verdict = "return" if rule.action == "allow" else "drop"
        out.append(f"        {' '.join([*match, verdict])}  # rule {rule.id}")
    out.append(f"        {'return' if default == 'allow' else 'drop'}  # default: {default}")
    out.append("    }")
    return out


def _dnat(fwd: Forward) -> str:
    where = (
        "fib daddr type local" if fwd.host_address == "0.0.0.0" else f"ip daddr {fwd.host_address}"
    )
    return (
        f"        {where} {fwd.protocol} dport {fwd.host_port} dnat ip to {fwd.vm_ip}:{fwd.vm_port}"
    )
