"""Golden-file tests of the network renderers (dnsmasq, nftables). Regenerate with
UPDATE_GOLDEN=1, then read the diff: these files are what the host runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hangar.services.net.apply import sync_dnsmasq
from hangar.services.net.dnsmasq_conf import (
    DnsmasqFiles,
    parse_leases,
    render_conf,
    render_dhcp_hosts,
    render_dns_hosts,
)
from hangar.services.net.nft_render import NetState, render_ruleset
from hangar.services.qemu.jail import dnsmasq_jail_argv
from hangar.spec.network import AttachedNic, FirewallRule, Forward, NetworkConfig
from tests.support.recording_runner import RecordingRunner

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
NETWORKS = {n.name: n for n in (NAT, ISO, BRIDGED)}


def nic(vm: str, network: str, tap: str, mac: str, ip: str | None) -> AttachedNic:
    """A NIC of VM ``vm`` (its id: ``vm-<name>``) on one of the networks above."""
    net = NETWORKS[network]
    return AttachedNic(
        vm=vm, vm_id=f"vm-{vm}", network=network, network_id=net.id, tap=tap, mac=mac, ip=ip
    )


def rule(id: int, vm: str, **spec: Any) -> FirewallRule:
    return FirewallRule(id=id, project="default", vm=vm, vm_id=f"vm-{vm}", **spec)


NICS = [
    nic("web", "lan", "hgtweb0000000", "52:54:00:00:00:01", "10.77.0.2"),
    nic("db", "lan", "hgtdb00000000", "52:54:00:00:00:02", "10.77.0.3"),
    nic("db", "backend", "hgtdb00000001", "52:54:00:00:01:02", "10.77.1.2"),
    nic("desk", "office", "hgtdesk000000", "52:54:00:00:02:01", None),
]
FORWARDS = [
    Forward(
        id=1,
        project="default",
        network="lan",
        host_port=8080,
        vm="web",
        vm_port=80,
        vm_ip="10.77.0.2",
    ),
    Forward(
        id=2,
        project="default",
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
    rule(1, "db", direction="in", action="allow", protocol="tcp", port=5432, cidr="10.77.0.0/24"),
    rule(2, "web", direction="out", action="deny", protocol="any", cidr="10.0.0.0/8"),
    rule(3, "web", direction="in", action="deny", protocol="icmp"),
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
    stray = Forward(
        id=9,
        project="default",
        network="lan",
        host_port=9,
        vm="gone",
        vm_port=9,
        vm_ip="10.77.0.9",
    )
    lost = AttachedNic(
        vm="x",
        vm_id="vm-x",
        network="deleted",
        network_id="dddd",
        tap="hgtx",
        mac="52:54:00:00:09:09",
        ip="10.9.9.9",
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


# --- two projects: the same VM and network names, told apart by id ----------------

OTHER_LAN = NAT.model_copy(
    update={
        "id": "eeee0000eeee0000",
        "project": "team",
        "bridge": "hgbeeee0000ee",
        "subnet": "10.77.5.0/24",
        "gateway": "10.77.5.1",
    }
)
OTHER_BACKEND = ISO.model_copy(
    update={
        "id": "ffff0000ffff0000",
        "project": "team",
        "bridge": "hgbffff0000ff",
        "subnet": "10.77.6.0/24",
        "gateway": "10.77.6.1",
    }
)
OTHER_WEB = AttachedNic(
    vm="web",
    vm_id="vm-team-web",
    network="lan",
    network_id=OTHER_LAN.id,
    tap="hgtteamweb000",
    mac="52:54:00:00:05:02",
    ip="10.77.5.2",
)


def _chain(text: str, name: str) -> list[str]:
    body = text.split(f"chain {name} {{")[1].split("\n    }")[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_same_names_in_two_projects_keep_their_own_rules_forwards_and_peers() -> None:
    team_rule = FirewallRule(
        id=7,
        project="team",
        vm="web",
        vm_id="vm-team-web",
        direction="in",
        action="deny",
        protocol="tcp",
        port=22,
    )
    team_forward = Forward(
        id=8,
        project="team",
        network="lan",
        host_port=2222,
        vm="web",
        vm_port=22,
        vm_ip="10.77.5.2",
    )
    text = render_ruleset(
        NetState(
            # Only the default project's networks are peered; the team's "backend" is not
            # the default project's "backend".
            [
                NAT.model_copy(update={"peers": ("backend",)}),
                ISO.model_copy(update={"peers": ("lan",)}),
                OTHER_LAN,
                OTHER_BACKEND,
            ],
            [*NICS[:3], OTHER_WEB],
            [*FORWARDS, team_forward],
            [*RULES, team_rule],
        )
    )
    # The default project's "web" has its rules 2 and 3, the team's "web" only rule 7.
    default_in = _chain(text, "in_hgtweb0000000")
    team_in = _chain(text, "in_hgtteamweb000")
    assert any("rule 3" in line for line in default_in)
    assert not any("rule 7" in line for line in default_in)
    assert team_in[:-1] == ["meta l4proto tcp th dport 22 drop  # rule 7"]
    assert not any("rule 2" in line for line in _chain(text, "out_hgtteamweb000"))
    assert "# web on lan (project team): inbound" in text
    # Each forward goes to its own project's "web".
    assert "tcp dport 8080 dnat ip to 10.77.0.2:80" in text
    assert "tcp dport 2222 dnat ip to 10.77.5.2:22" in text
    # The team's lan is peered with nothing: only its own bridge may reach it.
    assert 'oifname "hgbeeee0000ee" iifname != "hgbeeee0000ee" ct status & dnat == 0 drop' in text
    assert 'oifname "hgbaaaa0000aa" iifname != { "hgbaaaa0000aa", "hgbbbbb0000bb" }' in text


def test_a_networks_dnsmasq_files_hold_its_own_nics_only(tmp_path: Path) -> None:
    # Both projects have a "lan" with a VM "web": each dnsmasq knows its own.
    files = DnsmasqFiles(tmp_path / OTHER_LAN.id)
    sync_dnsmasq(RecordingRunner(), OTHER_LAN, files, [*NICS, OTHER_WEB])
    assert files.hostsfile.read_text() == "52:54:00:00:05:02,10.77.5.2,web\n"
    assert files.addn_hosts.read_text() == "10.77.5.2 web.lan web\n"


def test_sandboxed_dnsmasq_drops_to_nobody_and_keeps_its_files_in_its_folder() -> None:
    files = DnsmasqFiles(FILES.dir, sandboxed=True)
    conf = render_conf(NAT, files, "nogroup")
    assert "user=nobody" in conf.splitlines() and "group=nogroup" in conf.splitlines()
    assert "user=root" not in conf
    for line in conf.splitlines():
        if line.startswith(("pid-file=", "dhcp-leasefile=", "dhcp-hostsfile=", "addn-hosts=")):
            assert line.split("=", 1)[1].startswith(f"{FILES.dir}/dnsmasq/"), line
    assert files.conf == FILES.conf  # root's, outside the folder dnsmasq may write


def test_sandboxed_dnsmasq_sees_only_its_config_and_folder() -> None:
    files = DnsmasqFiles(FILES.dir, sandboxed=True)
    argv = dnsmasq_jail_argv(["dnsmasq", f"--conf-file={files.conf}"], files.conf, files.shared)
    assert argv[0] == "/usr/bin/bwrap" and argv[-2:] == ["dnsmasq", f"--conf-file={files.conf}"]
    binds = [(argv[i], argv[i + 1]) for i, a in enumerate(argv) if a.endswith("bind")]
    assert ("--ro-bind", str(files.conf)) in binds
    assert ("--bind", str(files.shared)) in binds
    assert ("--bind", str(FILES.dir)) not in binds
    assert "--unshare-net" not in argv  # it serves the bridge in hangard's namespace
