"""Real QEMU on the tiny image: copies of running VMs, VM -> OVA -> image -> VM, templates.

One source VM is shared by the module's tests (each makes the state it needs).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.guest_console import GuestConsole, guest
from tests.support.waiting import wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"
MEMORY = 128 * 1024 * 1024
SOURCE = "st-src"


def console(client: Client, name: str) -> GuestConsole:
    c = GuestConsole(client.console(name))
    c.send("\n")
    return c


def ensure_running(client: Client, name: str) -> None:
    if client.vm(name)["state"] != "running":
        seen = client.boot_count(name, MARKER)
        client.start(name)
        wait_for_marker(client, name, MARKER, occurrence=seen + 1)


def ensure_stopped(client: Client, name: str) -> None:
    if client.vm(name)["state"] != "stopped":
        assert client.stop(name)["method"] == "acpi"


def delete_quietly(client: Client, *names: str) -> None:
    for name in names:
        with contextlib.suppress(ApiError):
            client.delete(name, force=True)


@pytest.fixture(scope="module")
def source(daemon: Daemon) -> Iterator[str]:
    with daemon.client() as client:
        client.launch({"name": SOURCE, "image": "tiny", "memory": MEMORY})
        try:
            wait_for_marker(client, SOURCE, MARKER)
            yield SOURCE
        finally:
            delete_quietly(client, SOURCE)


def test_copy_of_running_vm_holds_the_disk_at_copy_time(
    client: Client, source: str, tmp_path: Path
) -> None:
    ensure_running(client, source)
    guest(client, source, "echo before-$((1+1)) > /root/moment && sync")
    try:
        raw = tmp_path / "live.raw"
        assert client.export(source, "raw", raw)["source_kind"] == "vm"
        copied = client.copy(source, "st-live-copy")
        assert client.vm(source)["state"] == "running"  # never stopped
        guest(client, source, "echo after-$((2+2)) > /root/moment && sync")
        original = client.vm(source)
        assert copied["id"] != original["id"] and copied["macs"] != original["macs"]
        assert copied["state"] == "stopped"
        client.start("st-live-copy")
        wait_for_marker(client, "st-live-copy", MARKER)
        seen = guest(client, "st-live-copy", "cat /root/moment; hostname")
        assert "before-2" in seen and "after-4" not in seen
        assert "st-live-copy" in seen  # its own name
        assert "after-4" in guest(client, source, "cat /root/moment")
        # The export of the running VM also holds the disk as it was then.
        exported = subprocess.run(
            ["debugfs", "-R", "cat /root/moment", str(raw)], capture_output=True, text=True
        )
        assert exported.stdout.strip() == "before-2"
        assert [p.name for p in tmp_path.iterdir()] == ["live.raw"]  # no snapshot left

        full = client.copy(source, "st-full-copy", full=True)
        assert full["state"] == "stopped"
    finally:
        delete_quietly(client, "st-live-copy", "st-full-copy")


def test_vm_to_ova_to_image_launches_with_the_same_content(
    client: Client, source: str, tmp_path: Path
) -> None:
    ensure_running(client, source)
    guest(client, source, "echo ova-$((6*7)) > /root/proof && sync")
    ensure_stopped(client, source)
    ova = tmp_path / "src.ova"
    result = client.export(source, "ova", ova)
    assert result["source_kind"] == "vm" and ova.stat().st_size == result["size"]
    try:
        imported = client.import_image(ova, name="st-from-ova")["image"]
        assert imported["kernel"] and imported["defaults"]["memory"] == MEMORY
        client.launch({"name": "st-ova-vm", "image": "st-from-ova"})
        wait_for_marker(client, "st-ova-vm", MARKER)
        assert "ova-42" in guest(client, "st-ova-vm", "cat /root/proof")
    finally:
        delete_quietly(client, "st-ova-vm")
        with contextlib.suppress(ApiError):
            client.delete_image("st-from-ova")


def test_template_is_generalized_and_launches_five(client: Client, source: str) -> None:
    ensure_running(client, source)
    guest(
        client,
        source,
        "echo 0123456789abcdef > /etc/machine-id && mkdir -p /etc/ssh /var/lib/dhcp"
        " && echo key > /etc/ssh/ssh_host_ed25519_key && echo lease > /var/lib/dhcp/eth0.lease"
        " && echo old-name > /etc/hostname && echo tmpl-$((5*5)) > /root/kept && sync",
    )
    ensure_stopped(client, source)
    names = [f"st-t-{i}" for i in range(1, 6)]
    try:
        template = client.publish(source, "st-tmpl")
        assert "generalized" in template["description"]
        for name in names:
            client.launch({"name": name, "image": "st-tmpl", "memory": MEMORY})
        for name in names:
            wait_for_marker(client, name, MARKER, timeout=120)
        vms = {name: client.vm(name) for name in names}
        assert len({vm["macs"][0] for vm in vms.values()}) == 5
        seen = guest(
            client,
            names[0],
            "cat /root/kept; echo ID=$(cat /etc/machine-id); ls /etc/ssh /var/lib/dhcp;"
            " cat /etc/hostname 2>&1",
        )
        assert "tmpl-25" in seen
        assert "ssh_host_ed25519_key" not in seen and "eth0.lease" not in seen
        assert "old-name" not in seen and "No such file" in seen
        # machine-id emptied by publishing, then a new one made at the first boot
        machine_id = seen.split("ID=")[-1].split()[0]
        assert len(machine_id) == 32 and machine_id != "0123456789abcdef"

        with pytest.raises(ApiError) as refused:
            client.delete_image("st-tmpl")
        assert refused.value.status == 409 and "in use by 5 VM(s)" in refused.value.message
    finally:
        delete_quietly(client, *names)
    # A full copy owns its disk and boot files: the template can go, the VM still boots.
    client.launch({"name": "st-full", "image": "st-tmpl", "memory": MEMORY}, start=False, full=True)
    try:
        client.delete_image("st-tmpl")
        assert "st-tmpl" not in [i["name"] for i in client.images()]
        client.start("st-full")
        wait_for_marker(client, "st-full", MARKER)
        assert "tmpl-25" in guest(client, "st-full", "cat /root/kept")
    finally:
        delete_quietly(client, "st-full")


def test_volume_attached_to_stopped_vm_and_online_disk_growth(client: Client, source: str) -> None:
    ensure_stopped(client, source)
    client.create_volume("st-vol", 64 * 1024 * 1024)
    try:
        client.attach_volume("st-vol", source)
        ensure_running(client, source)
        assert guest(client, source, "cat /sys/block/vdb/size").split()[-1] == str(
            64 * 1024 * 1024 // 512
        )
        with pytest.raises(ApiError) as live:
            client.delete_volume("st-vol")
        assert live.value.status == 409 and "in use" in live.value.message

        before = client.vm(source)["disk_size"]
        grown = client.resize_vm(source, before + 512 * 1024 * 1024)
        assert grown["disk_size"] == before + 512 * 1024 * 1024
        # block_resize on the running VM: the guest sees the new size at once.
        assert guest(client, source, "cat /sys/block/vda/size").split()[-1] == str(
            grown["disk_size"] // 512
        )
        ensure_stopped(client, source)
        client.detach_volume("st-vol", source)
    finally:
        client.delete_volume("st-vol")


def has_vdb(client: Client) -> bool:
    """Asked for a word the shell computes: the console also echoes the command and
    kernel messages that may name vdb."""
    seen = guest(client, "st-q35", "echo VDB-$(test -e /sys/block/vdb && echo yes || echo no)")
    assert "VDB-yes" in seen or "VDB-no" in seen, seen
    return "VDB-yes" in seen


def test_volume_hotplug_on_a_running_q35_vm(client: Client) -> None:
    client.launch({"name": "st-q35", "image": "tiny", "memory": MEMORY, "machine": "q35"})
    client.create_volume("st-hot", 32 * 1024 * 1024, fmt="raw")
    try:
        wait_for_marker(client, "st-q35", MARKER)
        assert not has_vdb(client)
        client.attach_volume("st-hot", "st-q35")
        c = console(client, "st-q35")
        try:
            c.run("i=0; while [ ! -e /sys/block/vdb ] && [ $i -lt 100 ]; do usleep 100000;"
                  " i=$((i+1)); done", timeout=30)  # fmt: skip
            assert c.run("cat /sys/block/vdb/size").split()[-1] == str(32 * 1024 * 1024 // 512)
            c.run("echo hotplugged-$((7*6)) | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync")
        finally:
            c.close()
        client.detach_volume("st-hot", "st-q35")
        assert not has_vdb(client)
        volume = next(v for v in client.volumes() if v["name"] == "st-hot")
        assert volume["vm"] is None
        assert Path(volume["path"]).read_bytes()[:14] == b"hotplugged-42\n"
    finally:
        delete_quietly(client, "st-q35")
        with contextlib.suppress(ApiError):
            client.delete_volume("st-hot")
