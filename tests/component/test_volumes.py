"""Pools and volumes through the storage service, with a fake QEMU and a recording runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from hangar.errors import Conflict, HostCommandFailed, InvalidInput, NotFound
from hangar.services.qemu.argv import render_argv
from hangar.spec.vm import VMCreate
from tests.component.conftest import PlatformFactory

G = 1024**3


async def test_pools_volumes_attach_detach_delete(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    await platform.start()
    storage = platform.storage
    assert [p.name for p in storage.list_pools()] == ["default"]
    fast = await storage.create_pool("fast", str(tmp_path / "fast"))
    assert Path(fast.path).is_dir() and fast.free > 0 and fast.size >= fast.free
    with pytest.raises(Conflict, match="overlaps pool 'fast'"):
        await storage.create_pool("inner", str(tmp_path / "fast" / "inner"))
    with pytest.raises(InvalidInput, match="absolute"):
        await storage.create_pool("rel", "relative/path")

    vol = await storage.create_volume("data", G, pool="fast", fmt="raw")
    assert vol.path == str(tmp_path / "fast" / "default" / "data.raw") and Path(vol.path).exists()
    create = platform.vms.runner.commands("qemu-img")[-1]  # type: ignore[attr-defined]
    assert create == ("qemu-img", "create", "-q", "-f", "raw", vol.path, str(G))
    with pytest.raises(Conflict, match="already exists"):
        await storage.create_volume("data", G, pool="fast")
    (pool_view,) = [p for p in storage.list_pools() if p.name == "fast"]
    assert pool_view.volumes == 1 and pool_view.used == Path(vol.path).stat().st_blocks * 512

    await platform.vms.create(VMCreate(name="web", image="tiny"), start=False)
    attached = await storage.attach("data", "web")
    assert attached.vm == "web"
    config = platform.vms.repo.get("web").config
    assert [d.path for d in config.data_disks] == [vol.path]
    argv = render_argv(config, platform.host, platform.vms.files(config))
    assert (
        f"driver=file,filename={vol.path},node-name=vol-{config.data_disks[0].volume[:12]}-file,discard=unmap"
        in argv
    )
    with pytest.raises(Conflict, match="in use by VM 'web'"):
        await storage.delete_volume("data")
    with pytest.raises(Conflict, match="already attached to VM 'web'"):
        await storage.attach("data", "web")

    await platform.vms.start("web")
    with pytest.raises(Conflict, match="no hotplug bus"):
        await storage.detach("data", "web")
    await platform.vms.stop("web")
    assert (await storage.detach("data", "web")).vm is None
    assert platform.vms.repo.get("web").config.data_disks == ()

    with pytest.raises(InvalidInput, match="only grow"):
        await storage.resize_volume("data", G // 2)
    assert (await storage.resize_volume("data", 2 * G)).size == 2 * G

    with pytest.raises(Conflict, match="still holds volumes"):
        await storage.delete_pool("fast")
    await storage.delete_volume("data")
    assert not Path(vol.path).exists()
    with pytest.raises(NotFound):
        storage.get_volume("data")
    await storage.delete_pool("fast")


async def test_deleting_a_vm_detaches_its_volumes(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    await platform.start()
    await platform.storage.create_volume("keep", G)
    await platform.vms.create(VMCreate(name="web", image="tiny"), start=False)
    await platform.storage.attach("keep", "web")
    await platform.vms.delete("web")
    assert platform.storage.get_volume("keep").vm is None


async def test_failed_volume_create_leaves_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    await platform.start()

    def fail(argv: tuple[str, ...]) -> None:
        Path(argv[-2]).write_bytes(b"partial")
        raise HostCommandFailed(list(argv), 1, "no space left on device")

    runner = platform.storage.runner
    runner.responses.insert(0, (("qemu-img", "create"), fail))  # type: ignore[attr-defined]
    with pytest.raises(HostCommandFailed):
        await platform.storage.create_volume("v", G)
    assert platform.storage.list_volumes() == []
    assert list((platform.paths.state / "volumes").iterdir()) == []


async def test_root_disk_grows_offline_and_online(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    await platform.start()
    await platform.vms.create(VMCreate(name="web", image="tiny", disk="1G"), start=False)
    with pytest.raises(InvalidInput, match="only grow"):
        await platform.storage.resize_vm_disk("web", G // 2)
    view = await platform.storage.resize_vm_disk("web", 2 * G)
    assert view.disk_size == 2 * G
    resize = platform.vms.runner.commands("qemu-img")[-1]  # type: ignore[attr-defined]
    assert resize[:5] == ("qemu-img", "resize", "-q", "-f", "qcow2") and resize[-1] == str(2 * G)
