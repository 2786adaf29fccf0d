"""Real QEMU on the tiny image: warm templates and forks make distinct, running machines.

One source VM and one warm template of it are shared by the module's tests.
What each guest *sees* is read inside it (MAC, address, hostname, machine-id).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hangar.client.client import ApiError, Client
from hangar.services.qemu.jail import QEMU_GID
from tests.support.daemon import Daemon
from tests.support.guest_console import guest
from tests.support.waiting import free_port, wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"
MEMORY = 128 * 1024 * 1024
SOURCE = "wm-src"
TEMPLATE = "wm-warm"


def identity(client: Client, name: str) -> dict[str, str]:
    """What the guest itself reports: MAC, IPv4 address, hostname, machine-id."""
    out = guest(
        client,
        name,
        "echo M=$(cat /sys/class/net/eth0/address) A=$(ip -4 -o addr show eth0 | awk '{print $4}')"
        " H=$(hostname) I=$(cat /etc/machine-id) Z=$((1+1))",
    )
    found = re.search(r"M=(\S+) A=(\S+) H=(\S+) I=(\S+) Z=2", out)
    assert found, out
    return dict(zip(["mac", "address", "hostname", "machine_id"], found.groups(), strict=True))


def delete_quietly(client: Client, *names: str) -> None:
    for name in names:
        with contextlib.suppress(ApiError):
            client.delete(name, force=True)


@pytest.fixture(scope="module")
def template(daemon: Daemon) -> Iterator[str]:
    with daemon.client() as client:
        client.launch({"name": SOURCE, "image": "tiny", "memory": MEMORY})
        try:
            wait_for_marker(client, SOURCE, MARKER)
            guest(client, SOURCE, "echo warm-$((6*7)) > /root/mark && sync")
            # Busy for a few seconds, then done: publish waits for the guest to settle,
            # so the saved guest has finished (a save at once would resume mid-loop).
            guest(client, SOURCE, "sh -c '(end=$(($(date +%s) + 4)); while [ $(date +%s) -lt "
                  "$end ]; do :; done; echo yes > /root/settled) >/dev/null 2>&1 &'")  # fmt: skip
            manifest = client.publish(SOURCE, TEMPLATE, warm=True)
            assert manifest["warm"]["memory"] and client.vm(SOURCE)["state"] == "running"
            yield TEMPLATE
        finally:
            delete_quietly(client, SOURCE)
            with contextlib.suppress(ApiError):
                client.delete_image(TEMPLATE)


def test_two_vms_from_one_warm_template_are_distinct_machines(
    client: Client, template: str
) -> None:
    source = identity(client, SOURCE)
    ports = {"wm-a": free_port(), "wm-b": free_port()}
    try:
        views = {}
        for name, port in ports.items():
            forward = {"host_port": port, "guest_port": 80}
            views[name] = client.launch(
                {"name": name, "image": template, "nics": [{"forwards": [forward]}]}
            )
            assert views[name]["state"] == "running"
            assert "yes" in guest(client, name, "cat /root/settled")
        seen = {name: identity(client, name) for name in ports}
        for name, view in views.items():
            assert seen[name]["mac"] == view["macs"][0]  # the guest uses the new MAC
            assert seen[name]["hostname"] == name
            # Resumed, not booted: the file written before publishing is there, and
            # the guest's own serial log shows the lease it took after the launch.
            assert "warm-42" in guest(client, name, "cat /root/mark")
            log = client.logs(name, lines=200)
            assert "Linux version" not in log and "has address" in log
            page = httpx.get(f"http://127.0.0.1:{ports[name]}/", timeout=30)
            assert page.status_code == 200 and f"Hello from {name}" in page.text
        for key in ("mac", "address", "hostname", "machine_id"):
            values = {seen["wm-a"][key], seen["wm-b"][key], source[key]}
            assert len(values) == 3, (key, values)
    finally:
        delete_quietly(client, *ports)


def test_a_fork_of_three_from_a_running_vm(client: Client, template: str) -> None:
    result = client.fork(SOURCE, 3, prefix="wm-f")
    names = [vm["name"] for vm in result["vms"]]
    try:
        assert names == ["wm-f-1", "wm-f-2", "wm-f-3"]
        assert client.vm(SOURCE)["state"] == "running"
        seen = [identity(client, name) for name in names]
        assert [s["hostname"] for s in seen] == names
        for key in ("mac", "address", "machine_id"):
            assert len({s[key] for s in seen}) == 3, (key, seen)
        assert [s["mac"] for s in seen] == [vm["macs"][0] for vm in result["vms"]]
        # The template holds this project's guest: no other project lists or launches it.
        assert {i["name"]: i["project"] for i in client.images()}[result["template"]] == "default"
        client.create_project("wm-other")
        other = Client(client.socket_path, project="wm-other")
        assert result["template"] not in {i["name"] for i in other.images()}
        with pytest.raises(ApiError) as refused:
            other.launch({"name": "thief", "image": result["template"]})
        assert refused.value.status == 404
    finally:
        with contextlib.suppress(ApiError):
            client.delete_project("wm-other")
        delete_quietly(client, *names)
        with contextlib.suppress(ApiError):
            client.delete_image(result["template"])


def test_a_memory_snapshot_of_a_warm_launched_vm_restores(client: Client, template: str) -> None:
    """Its QEMU loaded a device-only stream (x-ignore-shared); its own snapshot is an
    ordinary stream that a fresh QEMU loads."""
    client.launch({"name": "wm-snap", "image": template})
    try:
        guest(client, "wm-snap", "echo kept-$((3*3)) > /root/snap-mark")
        client.create_snapshot("wm-snap", "s1", memory=True)
        guest(client, "wm-snap", "rm /root/snap-mark")
        client.restore_snapshot("wm-snap", "s1", force=True)
        out = guest(client, "wm-snap", "cat /root/snap-mark; echo R=$((1+2))")
        assert "kept-9" in out and "R=3" in out, out
    finally:
        delete_quietly(client, "wm-snap")


def test_a_warm_launch_that_cannot_be_leaves_nothing(
    client: Client, template: str, daemon: Daemon
) -> None:
    vms = daemon.home / "lib" / "vms"
    before = sorted(p.name for p in vms.iterdir())
    with pytest.raises(ApiError) as other_memory:
        client.launch({"name": "wm-bad", "image": template, "memory": 2 * MEMORY})
    assert other_memory.value.status == 400 and "warm" in other_memory.value.message
    taken = free_port()
    with held_port(taken), pytest.raises(ApiError) as busy:
        client.launch(
            {
                "name": "wm-bad",
                "image": template,
                "nics": [{"forwards": [{"host_port": taken, "guest_port": 80}]}],
            }
        )
    assert busy.value.status == 409 and "not available" in busy.value.message
    assert "wm-bad" not in [vm["name"] for vm in client.vms()]
    assert sorted(p.name for p in vms.iterdir()) == before
    with pytest.raises(ApiError) as not_running:
        client.fork("wm-nope", 2)
    assert not_running.value.status == 404
    # The tiny image has no identity script to wait again: no standby VMs, and a
    # publish that asks for them makes no template.
    with pytest.raises(ApiError) as no_standby:
        client.set_standby(template, 1)
    assert no_standby.value.status == 400 and "identity port" in no_standby.value.message
    assert client.standby(template) == {"template": template, "count": 0, "ready": []}
    with pytest.raises(ApiError) as no_publish:
        client.publish(SOURCE, "wm-standby", warm=True, standby=1)
    assert no_publish.value.status == 400 and "identity port" in no_publish.value.message
    assert "wm-standby" not in [i["name"] for i in client.images()]


@contextlib.contextmanager
def held_port(port: int) -> Iterator[None]:
    """Hold ``port`` on loopback so a forward to it cannot be set up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def test_the_template_folder_holds_the_saved_guest(daemon: Daemon, template: str) -> None:
    folder: Path = daemon.home / "lib" / "images" / template
    names = {p.name for p in folder.iterdir()}
    # RAM in a sparse file of the guest's size, devices in a small stream; the
    # stream it was made from and the helper's files are gone.
    assert {"ram.img", "state.bin", "disk.qcow2", "image.json"} <= names
    assert "memory.bin" not in names and not any(n.startswith(".") for n in names)
    manifest = json.loads((folder / "image.json").read_text())
    assert (folder / "ram.img").stat().st_size == manifest["defaults"]["memory"]
    assert (folder / "ram.img").stat().st_blocks * 512 < manifest["defaults"]["memory"]
    assert (folder / "state.bin").stat().st_size < 4 * 1024 * 1024


def test_warm_launches_leave_the_template_ram_file_unchanged(
    client: Client, daemon: Daemon, template: str
) -> None:
    ram = daemon.home / "lib" / "images" / template / "ram.img"
    before = hashlib.sha256(ram.read_bytes()).hexdigest()
    client.launch({"name": "ram-check", "image": template})
    try:
        # The guest writes a MiB of its memory (a file on its RAM disk).
        out = guest(
            client, "ram-check", "head -c 1048576 /dev/urandom > /root/junk; echo W=$((2+2))"
        )
        assert "W=4" in out
    finally:
        client.delete("ram-check", force=True)
    assert hashlib.sha256(ram.read_bytes()).hexdigest() == before


def test_a_warm_launchs_qemu_cannot_write_the_template_ram_file(
    client: Client, daemon: Daemon, template: str
) -> None:
    """The template's RAM file is read by every VM launched from it: their sandboxed
    QEMUs may not write it (QEMU 7.2 opens a RAM file read-write, so it gets a copy of
    its own, which hangard unlinks once mapped)."""
    ram = daemon.home / "lib" / "images" / template / "ram.img"
    info = ram.stat()
    assert info.st_uid == 0 and not stat.S_IMODE(info.st_mode) & 0o022, oct(info.st_mode)
    client.launch({"name": "ram-owner", "image": template})
    try:
        assert "W=4" in guest(client, "ram-owner", "echo W=$((2+2))")
        vm = client.vm("ram-owner")
        pid = int(vm["pid"])
        uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        # What an attacker who took over this QEMU could do with the template's file:
        tried = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={QEMU_GID}", "--",
             sys.executable, "-c", f"open({str(ram)!r}, 'r+b')"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert tried.returncode != 0 and "PermissionError" in tried.stderr, tried
        maps = Path(f"/proc/{pid}/maps").read_text()
        if str(ram) not in maps:  # QEMU < 8.2: its own copy, already unlinked
            vm_dir = Path(str(vm["serial_log"])).parent
            assert f"{vm_dir}/ram.img (deleted)" in maps
            assert not (vm_dir / "ram.img").exists()
    finally:
        client.delete("ram-owner", force=True)
