"""debian-12 warm template: two VMs launched from it resume the saved guest, and the
guest agent makes each a distinct machine (MAC seen by the guest, DHCP address and
client id, hostname, machine-id, SSH host keys), reachable over SSH with the caller's
key."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.waiting import free_port, wait_for_agent

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1500)]
SOURCE = "dw-src"
TEMPLATE = "dw-warm"
FACTS = (
    "echo $(cat /sys/class/net/eth0/address) $(ip -4 -o addr show eth0 | awk '{print $4}') "
    "$(hostname) $(cat /etc/machine-id) "
    "$(ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub | awk '{print $2}') "
    "$(cat /run/warm-mark) $(systemctl is-active ssh) $(date +%s) "
    "$(sed -n 's/^CLIENTID=//p' /run/systemd/netif/leases/*)"
)
KEYS = (
    "mac", "address", "hostname", "machine_id", "host_key", "mark", "sshd", "clock", "client_id"
)  # fmt: skip


def facts(client: Client, name: str) -> dict[str, str]:
    ran = client.exec(name, ["sh", "-c", FACTS])
    assert ran["exit_code"] == 0, ran
    return dict(zip(KEYS, ran["stdout"].split(), strict=True))


@pytest.fixture(scope="module")
def template(daemon: Daemon, debian_image: str, ssh_home: Path) -> Iterator[str]:
    key = (ssh_home / ".ssh" / "id_ed25519.pub").read_text().strip()
    with daemon.client() as client:
        client.launch({"name": SOURCE, "image": debian_image, "ssh_keys": [key]})
        try:
            wait_for_agent(client, SOURCE)
            # The saved guest's clock is an hour behind: launches must set it.
            client.exec(SOURCE, ["sh", "-c", "echo warm-42 > /run/warm-mark; "
                                 "date -s @$(( $(date +%s) - 3600 ))"])  # fmt: skip
            manifest = client.publish(SOURCE, TEMPLATE, warm=True)
            assert manifest["agent"] and manifest["cloud_init"]
            # Saved as a RAM file, with the identity script waiting in the guest...
            assert manifest["warm"]["ram"] == "ram.img"
            assert isinstance(manifest["warm"]["listener"], int)
            # It waits on hangar's own port: launches need no agent call.
            assert manifest["warm"]["config"]["identity_channel"] is True
            # ... which the source itself no longer runs.
            left = client.exec(SOURCE, ["sh", "-c", "ls /run/hangar-identity; pgrep -x perl; "
                                            "ls /run/systemd/network/*.d/hangar-*"])  # fmt: skip
            assert left["exit_code"] != 0 and left["stdout"] == "", left
            yield TEMPLATE
        finally:
            with contextlib.suppress(ApiError):
                client.delete(SOURCE, force=True)
            with contextlib.suppress(ApiError):
                client.delete_image(TEMPLATE)


def test_two_debian_vms_from_a_warm_template_are_distinct_and_reachable(
    daemon: Daemon, client: Client, template: str, ssh_home: Path
) -> None:
    source = facts(client, SOURCE)
    names = ["dw-a", "dw-b"]
    try:
        # A launch gets only the keys it asks for, never the template's (issue 14).
        key = (ssh_home / ".ssh" / "id_ed25519.pub").read_text().strip()
        views = {
            name: client.launch({"name": name, "image": template, "ssh_keys": [key]})
            for name in names
        }
        seen = {name: facts(client, name) for name in names}
        for name, view in views.items():
            assert view["state"] == "running"
            assert seen[name]["mac"] == view["macs"][0]  # the guest uses the new MAC
            assert seen[name]["hostname"] == name
            # Resumed, not booted: a file on the source's tmpfs is there.
            assert seen[name]["mark"] == "warm-42"
            assert seen[name]["sshd"] == "active"
            assert abs(int(seen[name]["clock"]) - time.time()) < 60, seen[name]
            # networkd's DHCP client id follows the new MAC (not the source's DUID).
            assert seen[name]["client_id"] == "01" + view["macs"][0].replace(":", "")
            # SSH with the caller's key, to the VM's own forwarded port.
            ran = daemon.cli("shell", name, "--", "hostname", env={"HOME": str(ssh_home)})
            assert ran.code == 0 and ran.stdout == f"{name}\n", ran
            assert "guest agent" not in ran.stderr, ran
        for key in ("mac", "address", "hostname", "machine_id", "host_key", "client_id"):
            values = {seen["dw-a"][key], seen["dw-b"][key], source[key]}
            assert len(values) == 3, (key, values)
    finally:
        for name in names:
            with contextlib.suppress(ApiError):
                client.delete(name, force=True)


def ready_standby(client: Client, template: str, timeout: float = 180) -> dict[str, object]:
    """The one standby VM of ``template`` ready for a launch, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = client.standby(template)["ready"]
        if ready:
            return next(v for v in client.vms(all_projects=True) if v["name"] == ready[0])
        time.sleep(0.5)
    raise AssertionError(f"no standby VM of {template} ready in {timeout} s")


def wait_http(port: int, path: str, timeout: float = 60) -> str:
    """The body of GET ``path`` on 127.0.0.1:``port``, once something answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def alive(pid: object) -> bool:
    try:
        os.kill(int(str(pid)), 0)
    except ProcessLookupError:
        return False
    return True


# Last in this module: it ends by deleting the template.
def test_launches_claim_standby_vms_which_are_made_again(
    daemon: Daemon, client: Client, template: str, ssh_home: Path
) -> None:
    source = facts(client, SOURCE)
    assert client.set_standby(template, 1)["count"] == 1
    try:
        standby = ready_standby(client, template)
        assert standby["project"] == "_standby" and standby["state"] == "running"
        shown = daemon.cli("image", "standby", template)
        assert shown.code == 0 and f"1 standby VM(s); ready: {standby['name']}" in shown.stdout
        assert standby["name"] not in [v["name"] for v in client.vms()]

        vm = client.launch({"name": "dw-s", "image": template})
        # The standby VM itself, now the caller's under the caller's name.
        assert (vm["id"], vm["pid"]) == (standby["id"], standby["pid"])
        assert (vm["project"], vm["state"]) == ("default", "running")
        seen = facts(client, "dw-s")
        assert seen["hostname"] == "dw-s" and seen["mac"] == vm["macs"][0]
        assert seen["mark"] == "warm-42" and seen["sshd"] == "active"
        assert seen["client_id"] == "01" + vm["macs"][0].replace(":", "")
        assert abs(int(seen["clock"]) - time.time()) < 60, seen
        for key in ("mac", "address", "machine_id", "host_key", "client_id"):
            assert seen[key] != source[key], key
        hosts = client.exec("dw-s", ["sh", "-c", "cat /etc/hostname; grep 127.0.1.1 /etc/hosts"])
        assert hosts["stdout"] == "dw-s\n127.0.1.1 dw-s\n", hosts
        ran = daemon.cli("shell", "dw-s", "--", "hostname", env={"HOME": str(ssh_home)})
        assert ran.code == 0 and ran.stdout == "dw-s\n", ran

        # Another standby VM takes its place.
        second = ready_standby(client, template)
        assert second["id"] != standby["id"]
        # A launch with a forward of its own to sshd resumes the template as before.
        nics = [{"forwards": [{"host_port": free_port(), "guest_port": 22}]}]
        other = client.launch({"name": "dw-f", "image": template, "nics": nics})
        assert other["id"] != second["id"] and client.standby(template)["ready"] == [second["name"]]
        assert facts(client, "dw-f")["hostname"] == "dw-f"
        # One with other forwards claims the standby VM, which gets them while it runs.
        port = free_port()
        nics = [{"forwards": [{"host_port": port, "guest_port": 8000}]}]
        web = client.launch({"name": "dw-h", "image": template, "nics": nics})
        assert web["id"] == second["id"]
        assert {f["host_port"]: f["guest_port"] for f in web["forwards"]}[port] == 8000
        client.exec(
            "dw-h",
            ["sh", "-c", "cd /etc && (setsid python3 -m http.server 8000 >/dev/null 2>&1 &)"],
        )
        assert wait_http(port, "/hostname") == "dw-h\n"
        third = ready_standby(client, template)

        # hangard killed: the standby VM it left is replaced when it starts again.
        daemon.kill()
        assert alive(third["pid"])
        daemon.start()
        with daemon.client() as fresh:
            assert not alive(third["pid"])
            fourth = ready_standby(fresh, template)
            assert fourth["id"] != third["id"]
            users = {"dw-s", "dw-f", "dw-h"}
            assert {v["name"] for v in fresh.vms(all_projects=True)} >= {*users, SOURCE}

            # While VMs use the template it stays, and so does its standby VM.
            with pytest.raises(ApiError) as in_use:
                fresh.delete_image(template)
            assert in_use.value.status == 409
            assert sorted(in_use.value.details["vms"]) == sorted(users)
            assert ready_standby(fresh, template)["project"] == "_standby"
            for name in users:
                fresh.delete(name, force=True)
            # Deleting it takes its standby VMs first.
            last = ready_standby(fresh, template)
            fresh.delete_image(template)
            assert not alive(last["pid"])
            assert [v for v in fresh.vms(all_projects=True) if v["project"] == "_standby"] == []
    finally:
        with daemon.client() as fresh:
            with contextlib.suppress(ApiError):
                fresh.set_standby(template, 0)
            for name in ("dw-s", "dw-f", "dw-h"):
                with contextlib.suppress(ApiError):
                    fresh.delete(name, force=True)
