"""Real QEMU on the tiny image: memory and disk snapshots, restore, the tree, delete.

One VM is shared by the module's tests; each test leaves it running with no snapshots.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.guest_console import guest
from tests.support.waiting import free_port, wait_for_marker

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"
MEMORY = 128 * 1024 * 1024
VM = "sn-a"
PORT = free_port()


def drop_snapshots(client: Client, name: str) -> None:
    """Delete every snapshot, leaves first (a stopped VM merges them into its disk)."""
    for snap in reversed(client.snapshots(name)):
        client.delete_snapshot(name, snap["name"])


def boot(client: Client, name: str) -> None:
    seen = client.boot_count(name, MARKER)
    client.start(name)
    wait_for_marker(client, name, MARKER, occurrence=seen + 1)


@pytest.fixture(scope="module")
def vm(daemon: Daemon) -> Iterator[str]:
    with daemon.client() as client:
        # A forwarded port: restoring must not find it "taken" by the VM's own QEMU.
        forward = {"host_port": PORT, "guest_port": 80}
        client.launch(
            {"name": VM, "image": "tiny", "memory": MEMORY, "nics": [{"forwards": [forward]}]}
        )
        try:
            wait_for_marker(client, VM, MARKER)
            yield VM
        finally:
            with contextlib.suppress(ApiError):
                client.delete(VM, force=True)


@pytest.fixture
def clean(client: Client, vm: str) -> Iterator[str]:
    yield vm
    if client.vm(vm)["state"] != "stopped":
        client.stop(vm, force=True)
    drop_snapshots(client, vm)
    boot(client, vm)


def test_memory_snapshot_brings_back_a_file_and_a_killed_process(
    client: Client, clean: str
) -> None:
    vm = clean
    started = guest(
        client,
        vm,
        "echo kept-$((3*4)) > /root/state && sync;"
        " sh -c 'while true; do sleep 1; done' </dev/null >/dev/null 2>&1 &"
        " echo PID-$((0))-$!",
    )
    found = re.search(r"PID-0-(\d+)", started)
    assert found, started
    pid = found.group(1)
    snap = client.create_snapshot(vm, "mem", memory=True)
    assert snap["memory"] and snap["current"] and snap["parent"] is None
    assert client.vm(vm)["state"] == "running"  # it kept running
    assert "kept-12" in guest(client, vm, "cat /root/state")

    guest(client, vm, f"echo changed > /root/state && sync; kill {pid}")
    assert "gone" in guest(client, vm, f"kill -0 {pid} 2>/dev/null && echo alive || echo gone")

    with pytest.raises(ApiError) as refused:
        client.restore_snapshot(vm, "mem")
    assert refused.value.remote_kind == "conflict" and "force the restore" in refused.value.hint
    # The hint is neutral; what to do next travels as an action the CLI words itself.
    assert refused.value.action == "force-or-snapshot" and refused.value.details["vm"] == vm
    assert "changed" in guest(client, vm, "cat /root/state")  # refused: nothing changed

    restored = client.restore_snapshot(vm, "mem", force=True)
    assert restored["state"] == "running"
    seen = guest(client, vm, f"cat /root/state; kill -0 {pid} && echo alive-$((1+1))")
    assert "kept-12" in seen and "changed" not in seen
    assert "alive-2" in seen  # the process carries on
    assert httpx.get(f"http://127.0.0.1:{PORT}/", timeout=30).status_code == 200
    # The snapshot stays reusable: a second restore works the same.
    guest(client, vm, "echo again > /root/state && sync")
    client.restore_snapshot(vm, "mem", force=True)
    assert "kept-12" in guest(client, vm, "cat /root/state")


def test_disk_snapshot_of_a_stopped_vm_and_restore(client: Client, clean: str) -> None:
    vm = clean
    guest(client, vm, "echo disk-$((2*3)) > /root/disk && sync")
    client.stop(vm)
    snap = client.create_snapshot(vm, "cold")
    assert not snap["memory"] and snap["current"]
    boot(client, vm)
    guest(client, vm, "echo later > /root/disk && sync")
    client.stop(vm)
    with pytest.raises(ApiError) as refused:
        client.restore_snapshot(vm, "cold")
    assert refused.value.remote_kind == "conflict" and "changed since" in refused.value.message
    vm_view = client.restore_snapshot(vm, "cold", force=True)
    assert vm_view["state"] == "stopped"  # a disk snapshot has no running state
    boot(client, vm)
    assert "disk-6" in guest(client, vm, "cat /root/disk")


def test_a_tree_with_two_branches_restored_in_turn(client: Client, clean: str) -> None:
    vm = clean
    guest(client, vm, "echo trunk > /root/where && sync")
    client.create_snapshot(vm, "trunk", memory=True)
    guest(client, vm, "echo branch-a > /root/where && sync")
    client.create_snapshot(vm, "a", memory=True)
    client.restore_snapshot(vm, "trunk", force=True)
    guest(client, vm, "echo branch-b > /root/where && sync")
    client.create_snapshot(vm, "b", memory=True)

    snaps = {s["name"]: s for s in client.snapshots(vm)}
    assert snaps["trunk"]["children"] == ["a", "b"]
    assert snaps["a"]["parent"] == snaps["b"]["parent"] == "trunk"
    assert [s["name"] for s in client.snapshots(vm) if s["current"]] == ["b"]

    for branch in ("a", "b", "trunk", "a"):
        client.restore_snapshot(vm, branch, force=True)
        expected = "trunk" if branch == "trunk" else f"branch-{branch}"
        assert guest(client, vm, "cat /root/where").split()[-1] == expected

    # Deleting 'trunk' while the VM runs on it is refused with the reason.
    with pytest.raises(ApiError) as refused:
        client.delete_snapshot(vm, "trunk")
    assert "running VM's disk is built on" in refused.value.message
    # 'b' is not under the running disk: it goes, and 'a' is still restorable.
    client.delete_snapshot(vm, "b")
    assert [s["name"] for s in client.snapshots(vm)] == ["trunk", "a"]
    # Stopped, 'trunk' is merged into the layer built on it: 'a' keeps its content.
    client.stop(vm, force=True)
    client.delete_snapshot(vm, "trunk")
    only = client.snapshots(vm)
    assert [(s["name"], s["parent"]) for s in only] == [("a", None)]
    client.restore_snapshot(vm, "a", force=True)
    assert guest(client, vm, "cat /root/where").split()[-1] == "branch-a"


def test_bad_requests_leave_nothing_behind(client: Client, clean: str) -> None:
    vm = clean
    folder = Path(client.vm(vm)["serial_log"]).parent
    client.stop(vm, force=True)
    before = sorted(str(p) for p in folder.rglob("*"))
    for bad in ("Bad_Name", "", "../x"):
        with pytest.raises(ApiError) as err:
            client.create_snapshot(vm, bad)
        assert err.value.status == 400, err.value
    with pytest.raises(ApiError) as missing:
        client.restore_snapshot(vm, "nope")
    assert missing.value.status == 404
    with pytest.raises(ApiError) as no_vm:
        client.create_snapshot("sn-nope", "x")
    assert no_vm.value.status == 404
    with pytest.raises(ApiError) as stopped:
        client.create_snapshot(vm, "mem", memory=True)
    assert stopped.value.remote_kind == "state-conflict" and "stopped" in stopped.value.message
    assert client.snapshots(vm) == []
    assert sorted(str(p) for p in folder.rglob("*")) == before

    client.create_snapshot(vm, "once")
    with pytest.raises(ApiError) as taken:
        client.create_snapshot(vm, "once")
    assert taken.value.status == 409 and "already has a snapshot" in taken.value.message
    client.delete_snapshot(vm, "once")
    assert client.snapshots(vm) == []
    # Merged back into the VM's disk: one disk file, no snapshot folders.
    disks = [p for p in folder.iterdir() if p.suffix == ".qcow2"]
    assert len(disks) == 1 and not any((folder / "snapshots").iterdir())
