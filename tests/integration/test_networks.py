"""Virtual networks with real QEMU, dnsmasq and nftables — all inside namespaces.

One world per module: hangard runs in namespace ``…-host`` (so every bridge,
tap, dnsmasq and rule it makes lives there), a veth joins it to ``…-up``, the
outside world. Three guests are booted once and shared by the tests, which run
in file order: a1 and a2 on the nat network ``natnet``, i1 on the isolated
``isonet``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import ApiError, Client
from hangar.spec.network import tap_name
from tests.support.daemon import Daemon, kill_vm_processes
from tests.support.guest_console import GuestConsole
from tests.support.netns import HOST_ADDR, HOST_IF, UPLINK_ADDR, World, in_ns, world
from tests.support.waiting import wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"
NAT_SUBNET, NAT_GW = "10.77.10.0/24", "10.77.10.1"
ISO_SUBNET, ISO_GW = "10.77.20.0/24", "10.77.20.1"
A1, A2, I1 = "10.77.10.11", "10.77.10.12", "10.77.20.11"
S1 = "10.77.20.30"
Q1_ISO, Q1_NAT = "10.77.20.40", "10.77.10.40"


class Net:
    def __init__(self, world: World, daemon: Daemon):
        self.world = world
        self.daemon = daemon
        self.consoles: dict[str, GuestConsole] = {}

    def client(self) -> Client:
        return self.daemon.client()

    def console(self, name: str) -> GuestConsole:
        if name not in self.consoles:
            with self.client() as client:
                console = GuestConsole(client.console(name))
            console.send("\n")
            self.consoles[name] = console
        return self.consoles[name]

    def run(self, vm: str, command: str, timeout: float = 30) -> str:
        return self.console(vm).run(command, timeout=timeout)

    def fetch(self, vm: str, url: str) -> str:
        """wget in the guest: the page, or '' (with the reason) when it failed."""
        # timeout(1), not wget -T: busybox 1.35's wget segfaults with -T. The
        # arithmetic keeps the failure marker out of the echoed command line.
        out = self.run(vm, f"timeout 5 wget -q -O - {url} 2>&1 || echo FETCH-FAIL$((6*7))")
        return "" if "FETCH-FAIL42" in out else out

    def host(self, *argv: str) -> str:
        result = in_ns(self.world.host, argv)
        assert result.returncode == 0, result
        return result.stdout

    def close(self) -> None:
        for console in self.consoles.values():
            console.close()
        self.consoles.clear()


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    home = Path(tempfile.mkdtemp(prefix="hgn-", dir="/tmp"))
    prefix = f"hgtest{os.getpid()}"
    with world(prefix) as w:
        daemon = Daemon(home, netns=w.host)
        daemon.start()
        n = Net(w, daemon)
        try:
            with daemon.client() as client:
                client.build_image("tiny")
                client.create_network(
                    {"name": "natnet", "type": "nat", "subnet": NAT_SUBNET, "uplink": HOST_IF}
                )
                client.create_network({"name": "isonet", "type": "isolated", "subnet": ISO_SUBNET})
                for name, network, ip in (
                    ("a1", "natnet", A1),
                    ("a2", "natnet", A2),
                    ("i1", "isonet", I1),
                ):
                    client.launch(
                        {
                            "name": name,
                            "image": "tiny",
                            "memory": "128M",
                            "nics": [{"type": "network", "network": network, "ip": ip}],
                        }
                    )
                for name in ("a1", "a2", "i1"):
                    wait_for_marker(client, name, MARKER, timeout=120)
            yield n
        finally:
            n.close()
            daemon.stop()
            kill_vm_processes(home)
            shutil.rmtree(home, ignore_errors=True)


def _wait_lease(client: Client, name: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        vm = client.vm(name)
        if all(a["leased"] for a in vm["addresses"]) or time.monotonic() > deadline:
            return vm
        time.sleep(0.2)


def test_dhcp_lease_and_dns_name(net: Net) -> None:
    with net.client() as client:
        for name, ip in (("a1", A1), ("a2", A2), ("i1", I1)):
            vm = _wait_lease(client, name)
            (addr,) = vm["addresses"]
            assert addr["ip"] == ip and addr["leased"], vm
    # The guest itself says it got the address by DHCP.
    assert f"inet {A1}/24" in net.run("a1", "ip -4 addr show eth0")
    listed = net.daemon.cli("list")
    assert A1 in listed.stdout and "natnet" in listed.stdout, listed
    networks = net.daemon.cli("network", "list")
    (row,) = [line for line in networks.stdout.splitlines() if "natnet" in line]
    assert "10.77.10.0/24" in row and "a1, a2" in row, networks
    shown = net.daemon.cli("network", "show", "isonet")
    assert "isolated" in shown.stdout and "i1" in shown.stdout and ISO_GW in shown.stdout, shown
    # VM.NETWORK names resolve inside the network, through the network's dnsmasq.
    answer = net.run("a1", f"nslookup a2.natnet {NAT_GW}")
    assert A2 in answer, answer
    assert I1 not in net.run("a1", f"nslookup i1.natnet {NAT_GW}")


def test_dnsmasq_and_qemu_of_a_networked_vm_run_unprivileged(net: Net) -> None:
    """dnsmasq drops to nobody in a namespace of its own; a VM's QEMU attaches to its
    tap (owned by its uid) with no capabilities (issue 14, item 3)."""
    assert net.daemon.proc is not None
    hangard_ns = os.readlink(f"/proc/{net.daemon.proc.pid}/ns/mnt")
    pidfiles = list((net.daemon.home / "lib" / "networks").glob("*/dnsmasq/dnsmasq.pid"))
    assert len(pidfiles) == 2  # natnet and isonet
    nobody = pwd.getpwnam("nobody").pw_uid
    for pidfile in pidfiles:
        pid = int(pidfile.read_text())
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{nobody}\t{nobody}\t{nobody}\t{nobody}" in status, status
        assert os.readlink(f"/proc/{pid}/ns/mnt") != hangard_ns
    with net.client() as client:
        pid = int(client.vm("a1")["pid"])
    status = Path(f"/proc/{pid}/status").read_text()
    assert "CapEff:\t0000000000000000" in status and "Seccomp:\t2" in status
    assert not status.split("Uid:\t", 1)[1].startswith("0\t")


def test_two_guests_on_one_nat_network_talk(net: Net) -> None:
    assert "Hello from a2" in net.fetch("a1", f"http://{A2}/")
    assert "Hello from a1" in net.fetch("a2", f"http://{A1}/")


def test_nat_to_the_uplink_shows_the_uplink_address(net: Net) -> None:
    # A server in the uplink namespace answers with the address it sees.
    code = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{UPLINK_ADDR}', 9000)); s.listen(1); s.settimeout(25)\n"
        "c, peer = s.accept(); c.recv(1000)\n"
        "c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nyou-are-' + peer[0].encode() + b'\\n'); c.close()\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", net.world.uplink, sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        page = net.fetch("a1", f"http://{UPLINK_ADDR}:9000/")
    finally:
        proc.kill()
        proc.wait()
    assert f"you-are-{HOST_ADDR}" in page, page


def test_isolated_network_cannot_reach_another_even_with_forwarding(net: Net) -> None:
    # The nat network turned forwarding on in hangard's namespace.
    assert net.host("cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    # Give the isolated guest a way out it would use if the host let it.
    net.run("i1", f"ip route add default via {ISO_GW} 2>/dev/null; true")
    assert net.fetch("i1", f"http://{A1}/") == ""
    assert net.fetch("i1", f"http://{UPLINK_ADDR}:9/") == ""
    assert net.fetch("a1", f"http://{I1}/") == ""
    # ...while its own network's DHCP and DNS still answer it.
    assert I1 in net.run("i1", f"nslookup i1.isonet {ISO_GW}")


def test_peered_networks_reach_each_other_until_unpeered(net: Net) -> None:
    # i1 kept the default route the previous test gave it.
    assert net.fetch("i1", f"http://{A1}/") == ""
    peered = net.daemon.cli("network", "peer", "isonet", "natnet")
    assert peered.code == 0, peered
    assert "Hello from a1" in net.fetch("i1", f"http://{A1}/")
    assert "Hello from i1" in net.fetch("a1", f"http://{I1}/")
    assert net.daemon.cli("network", "unpeer", "natnet", "isonet").code == 0
    assert net.fetch("i1", f"http://{A1}/") == ""
    with net.client() as client:
        assert client.network("isonet")["config"]["peers"] == []


def test_tcp_and_udp_forwards_reached_from_the_uplink(net: Net) -> None:
    tcp = net.daemon.cli("forward", "add", "natnet", f"{HOST_ADDR}:8080", "a1:80")
    assert tcp.code == 0, tcp
    udp = net.daemon.cli("forward", "add", "natnet", "5300", "a2:5300", "--udp", "--format", "json")
    assert udp.code == 0, udp
    udp_id = json.loads(udp.stdout)["id"]
    listed = net.daemon.cli("forward", "list")
    assert "a1:80" in listed.stdout and "5300/udp" in listed.stdout, listed

    got = net.world.python_in_uplink(
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://{HOST_ADDR}:8080/', timeout=10).read().decode())"
    )
    assert "Hello from a1" in got.stdout, got

    # The tiny guest has no UDP server; its kernel counts datagrams that reach
    # a port nobody listens on (Udp NoPorts). 20 datagrams sent from the
    # uplink to the forwarded port must show up there — and nowhere else.
    def no_ports(vm: str) -> int:
        text = net.run(vm, "grep '^Udp:' /proc/net/snmp")
        header, values = re.findall(r"Udp:([^\r\n]*)", text)[-2:]
        return int(dict(zip(header.split(), values.split(), strict=True))["NoPorts"])

    before_a2, before_a1 = no_ports("a2"), no_ports("a1")
    sent = net.world.python_in_uplink(
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"[s.sendto(b'ping', ('{HOST_ADDR}', 5300)) or time.sleep(0.02) for _ in range(20)]\n"
    )
    assert sent.returncode == 0, sent
    time.sleep(1)
    assert no_ports("a2") - before_a2 >= 20
    assert no_ports("a1") - before_a1 < 20

    deleted = net.daemon.cli("forward", "delete", str(udp_id))
    assert deleted.code == 0, deleted
    with net.client() as client:
        assert [f["vm_port"] for f in client.forwards("natnet")] == [80]


def test_firewall_rule_blocks_then_allows_again(net: Net) -> None:
    assert "Hello from a2" in net.fetch("a1", f"http://{A2}/")
    added = net.daemon.cli(
        "firewall",
        "add",
        "a2",
        "deny",
        "in",
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--format",
        "json",
    )
    assert added.code == 0, added
    rule = json.loads(added.stdout)["id"]
    assert net.fetch("a1", f"http://{A2}/") == ""
    # Other traffic still passes: the rule is about TCP port 80 only.
    assert "1 packets received" in net.run("a1", f"ping -c 1 -W 3 {A2}")
    assert net.daemon.cli("firewall", "delete", str(rule)).code == 0
    assert "Hello from a2" in net.fetch("a1", f"http://{A2}/")


def test_spoofed_source_address_is_dropped(net: Net) -> None:
    spoof = "10.77.10.99"
    assert "1 packets received" in net.run("a1", f"ping -c 1 -W 3 {A2}")
    net.run("a1", f"ip addr add {spoof}/24 dev eth0")
    try:
        out = net.run("a1", f"ping -c 2 -W 2 -I {spoof} {A2}")
        assert "0 packets received" in out, out
    finally:
        net.run("a1", f"ip addr del {spoof}/24 dev eth0")
    assert "1 packets received" in net.run("a1", f"ping -c 1 -W 3 {A2}")


def test_nic_attach_refused_while_running_then_made_on_a_stopped_vm(net: Net) -> None:
    refused = net.daemon.cli("network", "attach", "a1", "isonet")
    assert refused.code == 4 and "no NIC hotplug" in refused.stderr, refused
    assert "stop the VM" in refused.stderr and "try: hangar stop a1" in refused.stderr, refused
    # A VM with a user-mode NIC only, attached to the isolated network while stopped.
    made = net.daemon.cli("launch", "tiny", "s1", "--memory", "128M", "--no-start")
    assert made.code == 0, made
    attached = net.daemon.cli("network", "attach", "s1", "isonet", "--ip", S1)
    assert attached.code == 0 and S1 in attached.stdout, attached
    with net.client() as client:
        client.start("s1")
        wait_for_marker(client, "s1", MARKER, timeout=120)
        assert _wait_lease(client, "s1")["addresses"][0]["leased"]
    info = net.daemon.cli("info", "s1")
    assert f"{S1} on isonet" in info.stdout, info
    # The guest DHCPs on its second NIC too; guests on an isolated network reach each other.
    assert f"inet {S1}/24" in net.run("s1", "ip -4 addr show eth1")
    assert "Hello from s1" in net.fetch("i1", f"http://{S1}/")


def has_eth1(net: Net) -> bool:
    """Whether q1's kernel has eth1. Asked for a word the shell computes, because the
    console also carries the typed command and kernel messages that name eth1."""
    seen = net.run("q1", "echo ETH1-$(test -e /sys/class/net/eth1 && echo yes || echo no)")
    assert "ETH1-yes" in seen or "ETH1-no" in seen, seen
    return "ETH1-yes" in seen


def test_nic_hotplug_on_a_running_q35_vm_is_seen_and_used_by_the_guest(net: Net) -> None:
    with net.client() as client:
        client.launch(
            {
                "name": "q1",
                "image": "tiny",
                "memory": "128M",
                "machine": "q35",
                "nics": [{"type": "network", "network": "isonet", "ip": Q1_ISO}],
            }
        )
        try:
            wait_for_marker(client, "q1", MARKER, timeout=180)
            assert not has_eth1(net)
            attached = net.daemon.cli("network", "attach", "q1", "natnet", "--ip", Q1_NAT)
            assert attached.code == 0 and Q1_NAT in attached.stdout, attached
            vm = client.vm("q1")
            nic = next(a for a in vm["addresses"] if a["network"] == "natnet")
            tap = tap_name(vm["id"], 1)
            assert tap in net.host("ip", "-o", "link", "show")
            # The guest sees the new NIC with the MAC hangar gave it, and leases on it.
            deadline = time.monotonic() + 30
            while not has_eth1(net):
                assert time.monotonic() < deadline, "the guest never saw the hotplugged NIC"
                time.sleep(0.5)
            assert nic["mac"] in net.run("q1", "cat /sys/class/net/eth1/address")
            net.run("q1", "ip link set eth1 up")
            net.run("q1", "udhcpc -i eth1 -s /etc/udhcpc/default.script -n -q -t 10 -T 1")
            assert f"inet {Q1_NAT}/24" in net.run("q1", "ip -4 addr show eth1")
            assert "Hello from q1" in net.fetch("a1", f"http://{Q1_NAT}/")
            # And out again: the guest lets go, the tap goes.
            detached = net.daemon.cli("network", "detach", "q1", "natnet")
            assert detached.code == 0, detached
            # Hot-unplug completes when the guest lets go of the device.
            deadline = time.monotonic() + 30
            while has_eth1(net):
                assert time.monotonic() < deadline, "the guest kept the unplugged NIC"
                time.sleep(0.5)
            assert tap not in net.host("ip", "-o", "link", "show")
            assert [a["network"] for a in client.vm("q1")["addresses"]] == ["isonet"]
        finally:
            net.consoles.pop("q1", None)
            with contextlib.suppress(ApiError):
                client.delete("q1", force=True)


def test_hangard_restart_adopts_dnsmasq_and_keeps_guests_talking(net: Net) -> None:
    with net.client() as client:
        pid = client.network("natnet")["dnsmasq_pid"]
    assert pid
    net.close()  # the consoles go through hangard
    net.daemon.kill()
    net.daemon.start()
    with net.client() as client:
        assert client.network("natnet")["dnsmasq_pid"] == pid
        assert client.vm("a1")["state"] == "running"
    assert "Hello from a2" in net.fetch("a1", f"http://{A2}/")
    assert A2 in net.run("a1", f"nslookup a2.natnet {NAT_GW}")


@pytest.mark.parametrize(
    ("spec", "status", "text"),
    [
        ({"name": "bad1", "type": "nat", "subnet": "10.77.10.128/25"}, 409, "overlaps network"),
        ({"name": "bad2", "type": "nat", "subnet": "192.0.2.0/24"}, 409, "host interface"),
        ({"name": "bad3", "type": "nat", "subnet": "10.1.2.3/24"}, 400, "not an IPv4 network"),
        ({"name": "bad4", "type": "nat", "subnet": "8.8.8.0/24"}, 400, "not a private"),
        ({"name": "bad5", "type": "nat", "uplink": "eth9"}, 404, "'eth9' does not exist"),
        ({"name": "bad6", "type": "bridged", "uplink": HOST_IF}, 404, "is not a bridge"),
        ({"name": "natnet", "type": "isolated"}, 409, "already exists"),
    ],
)
def test_bad_network_input_creates_nothing(net: Net, spec: dict, status: int, text: str) -> None:
    links_before = net.host("ip", "-br", "link")
    with net.client() as client:
        before = client.networks()
        with pytest.raises(ApiError) as info:
            client.create_network(spec)
        assert info.value.status == status and text in info.value.message, info.value
        assert info.value.hint
        assert client.networks() == before
    assert net.host("ip", "-br", "link") == links_before


def test_launch_on_unknown_network_or_taken_address_creates_nothing(net: Net) -> None:
    with net.client() as client:
        for nic, text in (
            ({"type": "network", "network": "nope"}, "no network named 'nope'"),
            ({"type": "network", "network": "natnet", "ip": A1}, "already used"),
            ({"type": "network", "network": "natnet", "ip": "10.77.99.5"}, "not a host address"),
        ):
            with pytest.raises(ApiError) as info:
                client.launch({"name": "ghost", "image": "tiny", "nics": [nic]})
            assert text in info.value.message, info.value
        assert "ghost" not in [v["name"] for v in client.vms()]
        # A network with VMs on it cannot be deleted.
        with pytest.raises(ApiError) as busy:
            client.delete_network("natnet")
        assert busy.value.status == 409 and "a1, a2" in busy.value.message
        assert busy.value.hint


def test_a_deleted_vms_address_is_leased_to_the_next_vm(net: Net) -> None:
    with net.client() as client:
        client.delete("a2", force=True)
        client.launch(
            {
                "name": "a3",
                "image": "tiny",
                "memory": "128M",
                "nics": [{"type": "network", "network": "natnet", "ip": A2}],
            }
        )
        wait_for_marker(client, "a3", MARKER, timeout=120)
        (addr,) = _wait_lease(client, "a3")["addresses"]
        assert addr["ip"] == A2 and addr["leased"], addr
    # a1 still has a2's MAC cached for the address; Linux would find out in a
    # few seconds, but the point here is the lease, so forget it now.
    net.run("a1", "ip neigh flush dev eth0")
    assert "Hello from a3" in net.fetch("a1", f"http://{A2}/")


def test_bridged_network_puts_taps_on_an_existing_bridge_and_leaves_it(net: Net) -> None:
    # A host bridge made by hand (inside the test's namespace), as an admin would.
    net.host("ip", "link", "add", "lanbr0", "type", "bridge")
    try:
        made = net.daemon.cli(
            "network", "create", "office", "--type", "bridged", "--uplink", "lanbr0"
        )
        assert made.code == 0, made
        with net.client() as client:
            vm = client.launch(
                {"name": "b1", "image": "tiny", "nics": [{"type": "network", "network": "office"}]},
                start=False,
            )
            assert vm["addresses"] == [
                {"network": "office", "mac": vm["macs"][0], "ip": None, "leased": False}
            ]
            ports = net.host("bridge", "link")
            assert re.search(r"hgt\S+ .*master lanbr0", ports), ports
            # Anti-spoofing holds on bridged networks too (MAC only: the LAN owns addresses).
            assert vm["macs"][0] in net.host("nft", "list", "table", "bridge", "hangar")
            client.delete("b1")
            assert "master lanbr0" not in net.host("bridge", "link")
            client.delete_network("office")
        assert "lanbr0" in net.host("ip", "-br", "link")  # not hangar's to remove
    finally:
        net.host("ip", "link", "del", "lanbr0")


def test_another_project_with_the_same_names_has_its_own_network(net: Net) -> None:
    """Project 'team' gets a nat network 'natnet' and a VM 'a1' too: real nft takes the
    ruleset with both, and each project's forward and rule go to its own 'a1'."""
    team_subnet, team_a1 = "10.77.30.0/24", "10.77.30.11"
    cli = net.daemon.cli
    with net.client() as root:
        root.create_project("team")
    team = Client(net.daemon.socket, project="team")
    try:
        made = cli(
            "--project", "team", "network", "create", "natnet", "--subnet", team_subnet,
            "--uplink", HOST_IF,
        )  # fmt: skip
        assert made.code == 0, made
        launched = cli(
            "--project", "team", "launch", "tiny", "a1", "--memory", "128M", "--no-start",
            "--network", "natnet", "--ip", team_a1,
        )  # fmt: skip
        assert launched.code == 0, launched
        fwd = cli("--project", "team", "forward", "add", "natnet", "8081", "a1:80")
        assert fwd.code == 0, fwd
        taken = cli("--project", "team", "forward", "add", "natnet", f"{HOST_ADDR}:8080", "a1:80")
        assert taken.code == 4 and "another project" in taken.stderr, taken
        rule = cli("--project", "team", "firewall", "add", "a1", "deny", "in", "--format", "json")
        assert rule.code == 0, rule
        rule_id = json.loads(rule.stdout)["id"]

        listed = cli("--project", "team", "network", "list")
        (row,) = [line for line in listed.stdout.splitlines() if "natnet" in line]
        assert team_subnet in row and "a1" in row, listed
        assert [f["vm_ip"] for f in team.forwards()] == [team_a1]
        ruleset = net.host("nft", "list", "ruleset")
        assert f"dnat ip to {team_a1}:80" in ruleset and f"dnat ip to {A1}:80" in ruleset
        with net.client() as client:
            assert client.firewall_rules() == []  # the default project's a1 has none
            default_id = client.vm("a1")["id"]
        team_id = team.vm("a1")["id"]

        def inbound(vm_id: str) -> list[str]:
            chain = ruleset.split(f"chain in_{tap_name(vm_id, 0)} {{")[1].split("}")[0]
            return [line.strip() for line in chain.strip().splitlines()]

        assert inbound(team_id) == ["drop", "return"]  # its deny rule, then the default
        assert inbound(default_id) == ["return"]
        # The default project's a1 still answers its forward; the team's rule is not its.
        got = net.world.python_in_uplink(
            "import urllib.request\n"
            f"print(urllib.request.urlopen('http://{HOST_ADDR}:8080/', timeout=10).read().decode())"
        )
        assert "Hello from a1" in got.stdout, got

        refused = cli("project", "delete", "team")
        assert refused.code == 4 and "VM" in refused.stderr, refused
        assert cli("--project", "team", "firewall", "delete", str(rule_id)).code == 0
        assert cli("--project", "team", "delete", "a1").code == 0
        refused = cli("project", "delete", "team")
        assert refused.code == 4 and "network" in refused.stderr, refused
        assert cli("--project", "team", "network", "delete", "natnet").code == 0
        assert cli("project", "delete", "team").code == 0
    finally:
        team.close()
    with net.client() as client:
        assert [n["config"]["name"] for n in client.networks()] == ["isonet", "natnet"]
        assert [f["vm_ip"] for f in client.forwards()] == [A1]
    assert team_subnet not in net.host("ip", "-br", "addr")


def test_deleting_everything_leaves_nothing_behind(net: Net) -> None:
    net.close()
    with net.client() as client:
        pids = [client.network(n)["dnsmasq_pid"] for n in ("natnet", "isonet")]
        for name in ("a1", "a3", "i1", "s1"):
            client.delete(name, force=True)
        for name in ("natnet", "isonet"):
            client.delete_network(name)
        assert client.networks() == [] and client.forwards() == []
    links = net.host("ip", "-br", "link")
    assert not re.search(r"^hg[bt]", links, re.M), links
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "dnsmasq" not in Path(
            f"/proc/{pid}/cmdline"
        ).read_text(errors="replace")
    assert "hangar" not in net.host("nft", "list", "tables")
    assert not (net.daemon.home / "lib" / "networks").exists() or not any(
        (net.daemon.home / "lib" / "networks").iterdir()
    )
