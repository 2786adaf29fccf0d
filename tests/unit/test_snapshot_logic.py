"""Pure snapshot logic: the tree, delete plans, warm guest addresses, the disk pointer,
and the QEMU command line of a resumed VM (golden files; UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.services.qemu import layers
from hangar.services.qemu.argv import VMFiles, render_argv
from hangar.services.snapshots import tree
from hangar.services.snapshots.service import kept_files, restore_kept, save_kept
from hangar.services.templates.warm import plan_address
from hangar.spec.resolve import resolve
from hangar.spec.vm import NicConfig, PortForward, VMConfig, VMCreate
from hangar.state.snapshots import SnapshotRecord
from tests.support.factories import host_facts, tiny_manifest

GOLDEN = Path(__file__).parent.parent / "golden"
VM_ID = "0123456789abcdef0123456789abcdef"
FILES = VMFiles(dir=Path("/var/lib/hangar/vms") / VM_ID, runtime=Path("/run/hangar/vm/0123"))


def _config() -> VMConfig:
    return resolve(
        VMCreate(name="web", image="tiny"),
        tiny_manifest(),
        host_facts(),
        vm_id=VM_ID,
        kernel_path="/var/lib/hangar/images/tiny/vmlinux-0123456789ab",
        initrd_path="/var/lib/hangar/images/tiny/initrd-0123456789ab.img",
    )


def snap(name: str, parent: str | None, created: str = "1") -> SnapshotRecord:
    return SnapshotRecord(
        id=f"id-{name}",
        vm_id="vm",
        name=name,
        parent=f"id-{parent}" if parent else None,
        disk=f"/d/{name}.qcow2",
        memory=None,
        config=_config(),
        size=1,
        created_at=created,
    )


# trunk -> a -> a2, trunk -> b ; other (a second root)
SNAPS = [
    snap("trunk", None, "1"),
    snap("a", "trunk", "2"),
    snap("b", "trunk", "3"),
    snap("a2", "a", "4"),
    snap("other", None, "5"),
]


def test_walk_puts_parents_first_and_names_children() -> None:
    nodes = tree.walk(SNAPS)
    assert [(n.snapshot.name, n.depth, n.children) for n in nodes] == [
        ("trunk", 0, ("a", "b")),
        ("a", 1, ("a2",)),
        ("a2", 2, ()),
        ("b", 1, ()),
        ("other", 0, ()),
    ]


def test_ancestors_nearest_first() -> None:
    assert tree.ancestors(SNAPS, "id-a2") == ["id-a2", "id-a", "id-trunk"]
    assert tree.ancestors(SNAPS, None) == []


def test_deleting_merges_into_every_layer_built_on_it() -> None:
    plan = tree.plan_delete(SNAPS, SNAPS[0], head="id-b", vm_running=False)
    assert [c.name for c in plan.merge_into_children] == ["a", "b"]
    assert not plan.merge_into_vm_disk and plan.refusal is None
    head = tree.plan_delete(SNAPS, SNAPS[3], head="id-a2", vm_running=False)
    assert head.merge_into_vm_disk and head.merge_into_children == ()


def test_a_running_vm_keeps_the_snapshots_under_its_disk() -> None:
    refused = tree.plan_delete(SNAPS, SNAPS[0], head="id-a2", vm_running=True)
    assert refused.refusal and "needs the VM stopped" in refused.refusal
    # 'b' is another branch: QEMU does not have it open.
    allowed = tree.plan_delete(SNAPS, SNAPS[2], head="id-a2", vm_running=True)
    assert allowed.refusal is None


def nic(address: str | None = None, dhcp_start: str | None = None) -> NicConfig:
    return NicConfig(type="user", mac="52:54:00:00:00:01", forwards=(), address=address,
                     dhcp_start=dhcp_start)  # fmt: skip


def test_a_booted_source_holds_one_lease_so_the_new_mac_leases_the_next_slot() -> None:
    assert plan_address(nic(), set()) == ("10.0.2.20", "10.0.2.19")
    assert plan_address(nic(), {"10.0.2.20", "10.0.2.21"}) == ("10.0.2.22", "10.0.2.21")


def test_a_warm_source_holds_the_leases_of_every_mac_it_had() -> None:
    # Resumed at base .19 with its own lease at .20: two leases in its table.
    assert plan_address(nic("10.0.2.20", "10.0.2.19"), {"10.0.2.20"}) == (
        "10.0.2.21",
        "10.0.2.19",
    )


def test_a_full_lease_table_or_no_free_address_is_refused() -> None:
    with pytest.raises(InvalidInput):
        plan_address(nic("10.0.2.40", "10.0.2.20"), set())
    everything = {f"10.0.2.{i}" for i in range(20, 240)}
    with pytest.raises(InvalidInput):
        plan_address(nic(), everything)


def test_the_disk_pointer_names_the_newest_overlay(tmp_path: Path) -> None:
    assert layers.active_disk(tmp_path) is None
    first = layers.new_layer(tmp_path)
    layers.point_to(tmp_path, first)
    assert layers.active_disk(tmp_path) == first
    second = layers.new_layer(tmp_path)
    layers.point_to(tmp_path, second)
    assert layers.active_disk(tmp_path) == second and first != second
    assert [p.name for p in tmp_path.iterdir()] == [layers.POINTER]
    files = VMFiles(dir=tmp_path, runtime=tmp_path, active_disk=layers.active_disk(tmp_path))
    assert files.disk == second


def _warm_config() -> VMConfig:
    config = _config()
    warm_nic = config.nics[0].model_copy(
        update={
            "address": "10.0.2.21",
            "dhcp_start": "10.0.2.20",
            "forwards": (PortForward(host_port=8080, guest_port=80),),
        }
    )
    return config.model_copy(update={"nics": (warm_nic,)})


CASES = {
    "tiny-incoming": (_config(), True),
    "tiny-warm-nic-incoming": (_warm_config(), True),
    "tiny-warm-nic-boot": (_warm_config(), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_argv_matches_golden(case: str) -> None:
    config, incoming = CASES[case]
    argv = render_argv(config, host_facts(), FILES, incoming=incoming, qmp_fd=7)
    rendered = "\n".join(argv) + "\n"
    golden = GOLDEN / f"argv-{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_a_resumed_vm_differs_from_a_booted_one_only_where_it_must() -> None:
    config = _warm_config()
    booted = render_argv(config, host_facts(), FILES)
    resumed = render_argv(config, host_facts(), FILES, incoming=True)
    assert resumed[-2:] == ["-incoming", "defer"]
    changed = [(a, b) for a, b in zip(booted, resumed, strict=False) if a != b]
    # Only the lease table's base: the forward goes to the guest's address either way.
    assert len(changed) == 1 and "dhcpstart=10.0.2.21" in changed[0][0]
    assert "dhcpstart=10.0.2.20" in changed[0][1] and "-10.0.2.21:80" in changed[0][1]


def test_kept_files_go_into_the_snapshot_and_back(tmp_path: Path) -> None:
    """The mechanism a UEFI variable store will use (service.kept_files names it)."""
    vars_file = tmp_path / "vm" / "OVMF_VARS.fd"
    vars_file.parent.mkdir()
    vars_file.write_bytes(b"boot order A")
    saved = tmp_path / "snap" / "kept"
    saved.parent.mkdir()
    save_kept([vars_file], saved)
    vars_file.write_bytes(b"boot order B")
    restore_kept(saved, [vars_file])
    assert vars_file.read_bytes() == b"boot order A"
    assert kept_files(_config(), FILES) == []  # no VM has such a file yet
