"""VMService over a fake Node (tests/support/fake_node.py): the use cases decide and
record, the Node acts. No QEMU, no process, no socket: what a service does is seen in
the database and in what it asked of the Node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.errors import Conflict, QemuFailed, StateConflict
from hangar.node.base import Gone, Outcome
from hangar.paths import Paths
from hangar.services.lifecycle import PowerState
from hangar.services.storage.images import ImageStore
from hangar.services.vms import VMService
from hangar.services.volumes import StorageService
from hangar.spec.vm import NicCreate, VMCreate
from hangar.state.db import Database
from hangar.state.vms import VMRepository
from hangar.state.volumes import PoolRepository, VolumeRepository
from tests.component.conftest import install_image
from tests.support.factories import host_facts, tiny_manifest
from tests.support.fake_node import FakeNode
from tests.support.recording_runner import RecordingRunner


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def vms(home: Path, node: FakeNode) -> Iterator[VMService]:
    paths = Paths(state=home / "lib", runtime=home / "run")
    paths.ensure()
    install_image(paths, tiny_manifest())
    db = Database(paths.database)
    yield VMService(
        paths, VMRepository(db), ImageStore(paths.images), host_facts(), RecordingRunner(),
        node=node,
    )  # fmt: skip
    db.close()


async def test_a_launch_asks_the_node_for_files_and_a_start(vms: VMService, node: FakeNode) -> None:
    view = await vms.create(VMCreate(name="web", image="tiny"))
    assert view.state is PowerState.RUNNING and view.pid == node.pid(view.id)
    assert node.starts == ["web"] and view.id in node.files
    assert (await vms.pause("web")).state is PowerState.PAUSED
    assert (await vms.resume("web")).state is PowerState.RUNNING
    stopped = await vms.stop("web")
    assert stopped.method == "acpi" and stopped.vm.state is PowerState.STOPPED
    assert not node.is_running(view.id)


async def test_a_failed_start_leaves_no_row_no_files_nothing_running(
    vms: VMService, node: FakeNode
) -> None:
    node.fail_start.add("web")
    with pytest.raises(QemuFailed):
        await vms.create(VMCreate(name="web", image="tiny"))
    assert vms.repo.list() == [] and node.files == set() and node.vms == {}


async def test_a_guest_that_ignores_the_power_button_is_forced(
    vms: VMService, node: FakeNode
) -> None:
    await vms.create(VMCreate(name="web", image="tiny"))
    node.ignores_acpi.add("web")
    assert (await vms.stop("web")).method == "forced-after-timeout"


async def test_a_guest_reboot_starts_the_vm_again_in_a_fresh_qemu(
    vms: VMService, node: FakeNode
) -> None:
    view = await vms.create(VMCreate(name="web", image="tiny"))
    await node.guest_ends(view.id, Outcome(PowerState.STOPPED, "the guest rebooted", reboot=True))
    for task in list(vms._background):
        await task
    assert node.starts == ["web", "web"] and node.is_running(view.id)
    assert (await vms.get("web")).state is PowerState.RUNNING


async def test_a_guest_that_crashes_is_recorded_with_the_nodes_reason(
    vms: VMService, node: FakeNode
) -> None:
    view = await vms.create(VMCreate(name="web", image="tiny"))
    await node.guest_ends(view.id, Outcome(PowerState.CRASHED, "the guest kernel panicked"))
    after = await vms.get("web")
    assert after.state is PowerState.CRASHED and after.state_reason == "the guest kernel panicked"


async def test_nics_are_hot_plugged_only_where_the_machine_can(
    vms: VMService, node: FakeNode
) -> None:
    micro = await vms.create(VMCreate(name="micro", image="tiny", machine="microvm"))
    with pytest.raises(StateConflict, match="no NIC hotplug"):
        await vms.attach_nic("micro", "lan")
    assert node.vms[micro.id].nics == list(micro.macs)  # nothing was plugged


async def test_reconcile_records_what_the_node_found(vms: VMService, node: FakeNode) -> None:
    kept = await vms.create(VMCreate(name="kept", image="tiny"), start=False)
    lost = await vms.create(VMCreate(name="lost", image="tiny"), start=False)
    for name in ("kept", "lost"):
        vms.repo.set_state(vms.repo.get(name, "default").id, PowerState.RUNNING)
    node.found = {kept.id: PowerState.PAUSED, lost.id: Gone(clean=False, reason="QEMU vanished")}
    await vms.reconcile()
    assert (await vms.get("kept")).state is PowerState.PAUSED and node.is_running(kept.id)
    gone = await vms.get("lost")
    assert gone.state is PowerState.CRASHED and gone.state_reason == "QEMU vanished"


async def test_delete_ends_the_qemu_and_removes_the_files(vms: VMService, node: FakeNode) -> None:
    view = await vms.create(VMCreate(name="web", image="tiny", nics=[NicCreate()]))
    await vms.delete("web", force=True)
    assert node.vms == {} and node.files == set() and vms.repo.list() == []
    del view


@pytest.fixture
def storage(vms: VMService) -> StorageService:
    db = vms.repo.db
    service = StorageService(vms.paths, PoolRepository(db), VolumeRepository(db), vms, vms.runner)
    service.ensure_default_pool()
    return service


async def test_volumes_are_plugged_by_the_node_where_the_machine_can(
    vms: VMService, node: FakeNode, storage: StorageService
) -> None:
    q35 = await vms.create(VMCreate(name="big", image="tiny", machine="q35"))
    micro = await vms.create(VMCreate(name="micro", image="tiny", machine="microvm"))
    await storage.create_volume("data", 64 * 1024 * 1024)
    await storage.create_volume("more", 64 * 1024 * 1024)
    assert sorted(node.images.values()) == [64 * 1024 * 1024] * 2
    attached = await storage.attach("data", "big")
    volume_id = storage.volumes.get("data", "default").id
    assert attached.vm == "big" and node.vms[q35.id].disks == [volume_id]
    with pytest.raises(Conflict, match="no hotplug bus"):
        await storage.attach("more", "micro")
    assert node.vms[micro.id].disks == []
    await storage.resize_volume("data", 128 * 1024 * 1024)
    assert node.vms[q35.id].sizes == {volume_id: 128 * 1024 * 1024}
    await storage.detach("data", "big")
    assert node.vms[q35.id].disks == []


async def test_a_root_disk_grows_live_or_offline_through_the_node(
    vms: VMService, node: FakeNode, storage: StorageService
) -> None:
    view = await vms.create(VMCreate(name="web", image="tiny"))
    await storage.resize_vm_disk("web", 4 << 30)
    assert node.vms[view.id].sizes == {"root": 4 << 30}
    await vms.stop("web")
    await storage.resize_vm_disk("web", 5 << 30)
    assert node.root_sizes == {view.id: 5 << 30}
