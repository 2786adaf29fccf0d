"""Golden-file tests of the network renderers (dnsmasq, nftables). Regenerate with
UPDATE_GOLDEN=1, then read the diff: these files are what the host runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hangar.services.net.dnsmasq_conf import (
    DnsmasqFiles,
    parse_leases,
    render_conf,
    render_dhcp_hosts,
    render_dns_hosts,
)
from hangar.services.net.nft_render import NetState, render_ruleset
from hangar.spec.network import AttachedNic, FirewallRule, Forward, NetworkConfig

GOLDEN = Path(__file__).parent.parent / "golden"
FILES = DnsmasqFiles(Path("/var/lib/hangar/networks/aaaa"))

NAT = NetworkConfig(
    id="aaaa0000aaaa0000",
    name="lan",
    type="nat",
    bridge="hgbaaaa0000aa",
    subnet="10.77.0.0/24",
    gateway="10.77.0.1",
    uplink="eth0",
    default_inbound="allow",
    host_access=False,
)
ISO = NetworkConfig(
    id="bbbb0000bbbb0000",
    name="backend",
    type="isolated",
    bridge="hgbbbbb0000bb",
    subnet="10.77.1.0/24",
    gateway="10.77.1.1",
    uplink=None,
    default_inbound="deny",
    host_access=False,
)
BRIDGED = NetworkConfig(
    id="cccc0000cccc0000",
    name="office",
    type="bridged",
    bridge="br0",
    subnet=None,
    gateway=None,
    uplink="br0",
    default_inbound="allow",
    host_access=False,
)
NICS = [
    AttachedNic(
        vm="web", network="lan", tap="hgtweb0000000", mac="52:54:00:00:00:01", ip="10.77.0.2"
    ),
    AttachedNic(
        vm="db", network="lan", tap="hgtdb00000000", mac="52:54:00:00:00:02", ip="10.77.0.3"
    ),
    AttachedNic(
        vm="db", network="backend", tap="hgtdb00000001", mac="52:54:00:00:01:02", ip="10.77.1.2"
    ),
    AttachedNic(vm="desk", network="office", tap="hgtdesk000000", mac="52:54:00:00:02:01", ip=None),
]
FORWARDS = [
    Forward(id=1, network="lan", host_port=8080, vm="web", vm_port=80, vm_ip="10.77.0.2"),
    Forward(
        id=2,
        network="lan",
        host_port=5353,
        vm="db",
        vm_port=53,
        protocol="udp",
        host_address="192.0.2.1",
        vm_ip="10.77.0.3",
    ),
]
RULES = [
    FirewallRule(
        id=1,
        vm="db",
        direction="in",
        action="allow",
        protocol="tcp",
        port=5432,
        cidr="10.77.0.0/24",
    ),
    FirewallRule(id=2, vm="web", direction="out", action="deny", protocol="any", cidr="10.0.0.0/8"),
    FirewallRule(id=3, vm="web", direction="in", action="deny", protocol="icmp"),
]

CASES = {
    "nft-empty.nft": lambda: render_ruleset(NetState()),
    "nft-full.nft": lambda: render_ruleset(NetState([NAT, ISO, BRIDGED], NICS, FORWARDS, RULES)),
    "nft-peered.nft": lambda: render_ruleset(
        NetState(
            [
                NAT.model_copy(update={"peers": ("backend",)}),
                ISO.model_copy(update={"peers": ("lan",)}),
            ],
            NICS[:3],
        )
    ),
    "dnsmasq-nat.conf": lambda: render_conf(NAT, FILES),
    "dnsmasq-isolated.conf": lambda: render_conf(ISO, FILES),
    "dnsmasq-lan-dhcp-hosts.txt": lambda: render_dhcp_hosts(
        [n for n in NICS if n.network == "lan"]
    ),
    "dnsmasq-lan-dns-hosts.txt": lambda: render_dns_hosts(
        NAT, [n for n in NICS if n.network == "lan"]
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden(case: str) -> None:
    rendered = CASES[case]()
    golden = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    a = render_ruleset(NetState([NAT, ISO, BRIDGED], NICS, FORWARDS, RULES))
    b = render_ruleset(NetState([BRIDGED, ISO, NAT], NICS[::-1], FORWARDS[::-1], RULES[::-1]))
    assert a == b


def test_ruleset_replaces_hangar_tables_whole() -> None:
    text = render_ruleset(NetState([NAT], NICS[:1]))
    # create-then-delete first: applying twice never fails, nothing old survives.
    head = text.splitlines()[1:5]
    assert head == [
        "table bridge hangar",
        "delete table bridge hangar",
        "table inet hangar",
        "delete table inet hangar",
    ]


def test_anti_spoofing_and_tag_dropping_per_tap() -> None:
    text = render_ruleset(NetState([NAT, BRIDGED], NICS))
    web = text.split("chain from_hgtweb0000000 {")[1].split("\n    }")[0]
    assert "ether saddr != 52:54:00:00:00:01 drop" in web
    assert "ip saddr != 10.77.0.2 drop" in web
    assert "arp saddr ip != 10.77.0.2 drop" in web
    # Only IPv4 and ARP pass; an 802.1Q-tagged frame (ether type vlan) hits the drop.
    lines = [line.strip() for line in web.strip().splitlines()]
    assert lines[-2:] == ["ether type { ip, arp } accept", "drop"]
    desk = text.split("chain from_hgtdesk000000 {")[1].split("\n    }")[0]
    assert "ip saddr" not in desk  # bridged: the address is the LAN's business
    assert "ether saddr != 52:54:00:00:02:01 drop" in desk


def test_forwards_of_unknown_vms_and_nics_of_unknown_networks_are_left_out() -> None:
    stray = Forward(id=9, network="lan", host_port=9, vm="gone", vm_port=9, vm_ip="10.77.0.9")
    lost = AttachedNic(
        vm="x", network="deleted", tap="hgtx", mac="52:54:00:00:09:09", ip="10.9.9.9"
    )
    text = render_ruleset(NetState([NAT], [*NICS[:1], lost], [stray]))
    assert "dport 9 " not in text and "hgtx" not in text


def test_parse_leases() -> None:
    text = (
        "1764180000 52:54:00:AA:BB:CC 10.77.0.2 web 01:52:54:00:aa:bb:cc\n"
        "garbage line\n"
        "1764180001 52:54:00:00:00:02 10.77.0.3 * *\n"
    )
    leases = parse_leases(text)
    assert [(le.mac, le.ip, le.hostname) for le in leases] == [
        ("52:54:00:aa:bb:cc", "10.77.0.2", "web"),
        ("52:54:00:00:00:02", "10.77.0.3", "*"),
    ]
