"""Storage pools (directories), volumes (one qcow2 or raw file in a pool), and disk growth.

A volume attached to a VM is rendered after its root disk (``vdb``, ``vdc``…
in the guest). Attaching and detaching change the VM's stored config; on a
running VM they also hotplug over QMP, which needs the ``q35`` machine (PCIe
root ports). hangar's default machine, ``microvm`` (virtio-mmio), has no
hotplug bus: attaching to a running microvm VM is refused with that reason.

Root disks and volumes only grow: ``qemu-img resize`` while stopped, QMP
``block_resize`` while running (the guest sees the new size at once; the tiny
guest grows its ext4 at its next boot).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from hangar.errors import Conflict, InvalidInput, NextStep, ResourceLimit
from hangar.names import check_name, check_project, member
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services.lifecycle import PowerState
from hangar.services.undo import revert_on_error
from hangar.services.vms import VMService, VMView
from hangar.spec.units import format_size
from hangar.spec.vm import DataDisk
from hangar.state.locks import ProjectKey
from hangar.state.vms import DEFAULT_PROJECT, VMRecord, now
from hangar.state.volumes import PoolRecord, PoolRepository, VolumeRecord, VolumeRepository

DEFAULT_POOL = "default"
STOPPED = (PowerState.STOPPED, PowerState.CRASHED)
LIVE = (PowerState.RUNNING, PowerState.PAUSED)


class PoolView(BaseModel):
    name: str
    path: str
    volumes: int
    used: int  # bytes allocated by the pool's volumes
    free: int  # bytes free on the pool's filesystem
    size: int  # bytes of the pool's filesystem


class VolumeView(BaseModel):
    project: str
    name: str
    pool: str
    format: str
    size: int
    allocated: int
    path: str
    vm: str | None


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


class StorageService:
    def __init__(
        self,
        paths: Paths,
        pools: PoolRepository,
        volumes: VolumeRepository,
        vms: VMService,
        runner: CommandRunner,
        disk_quota: Callable[[str, int], None] | None = None,
    ):
        """``disk_quota(project, extra_bytes)`` raises if the project cannot take that much
        more disk (see :meth:`ProjectService.check_disk_quota`)."""
        self.disk_quota = disk_quota
        self.paths = paths
        self.pools = pools
        self.volumes = volumes
        self.vms = vms
        self.runner = runner
        self._lock = asyncio.Lock()

    def ensure_default_pool(self) -> None:
        if not any(p.name == DEFAULT_POOL for p in self.pools.list()):
            path = self.paths.state / "volumes"
            path.mkdir(parents=True, exist_ok=True)
            self.pools.insert(DEFAULT_POOL, str(path))

    # --- pools ----------------------------------------------------------------------

    async def create_pool(self, name: str, path: str) -> PoolView:
        check_name(name, what="pool name")
        folder = Path(path)
        if not folder.is_absolute() or "," in path:
            raise InvalidInput(
                f"pool path '{path}' is not an absolute path without commas",
                hint="give a full path (QEMU's option syntax cannot carry commas)",
            )
        folder = folder.resolve()
        for other in self.pools.list():
            theirs = Path(other.path)
            if folder == theirs or theirs in folder.parents or folder in theirs.parents:
                raise Conflict(
                    f"'{folder}' overlaps pool '{other.name}' at {other.path}",
                    hint="pools must not nest; pick a separate folder",
                )
        async with self._lock, revert_on_error() as undo:
            if not folder.exists():
                folder.mkdir(parents=True)
                undo.push("remove pool folder", lambda: folder.rmdir())
            elif not folder.is_dir():
                raise InvalidInput(f"'{folder}' is not a folder", hint="give a folder")
            record = self.pools.insert(name, str(folder))
        return self._pool_view(record)

    def _pool_view(self, pool: PoolRecord) -> PoolView:
        volumes = self.volumes.list(pool=pool.name)
        st = os.statvfs(pool.path)
        return PoolView(
            name=pool.name,
            path=pool.path,
            volumes=len(volumes),
            used=sum(_allocated(self._file(v, pool)) for v in volumes),
            free=st.f_bavail * st.f_frsize,
            size=st.f_blocks * st.f_frsize,
        )

    def list_pools(self) -> list[PoolView]:
        return [self._pool_view(p) for p in self.pools.list()]

    async def delete_pool(self, name: str) -> None:
        pool = self.pools.get(name)
        if name == DEFAULT_POOL:
            raise Conflict("the default pool cannot be deleted", hint="delete its volumes instead")
        async with self._lock:
            if self.volumes.list(pool=name):
                raise Conflict(
                    f"pool '{name}' still holds volumes", hint="delete or move them first"
                )
            self.pools.delete(pool.name)

    # --- volumes --------------------------------------------------------------------

    @staticmethod
    def _file(volume: VolumeRecord, pool: PoolRecord) -> Path:
        # One folder per project: names are unique per project, not per pool.
        folder = Path(pool.path) / check_project(volume.project)
        return member(folder, f"{check_name(volume.name)}.{volume.format}", what="volume file")

    def _check_quota(self, project: str, extra: int) -> None:
        if self.disk_quota is not None:
            self.disk_quota(project, extra)

    def _volume_view(self, volume: VolumeRecord) -> VolumeView:
        path = self._file(volume, self.pools.get(volume.pool))
        vm = None
        if volume.vm_id is not None:
            owner = self.vms.repo.by_id(volume.vm_id)
            vm = owner.name if owner is not None else None
        return VolumeView(
            project=volume.project,
            name=volume.name,
            pool=volume.pool,
            format=volume.format,
            size=volume.size,
            allocated=_allocated(path),
            path=str(path),
            vm=vm,
        )

    def list_volumes(self, project: str | None = None) -> list[VolumeView]:
        """The volumes of ``project`` (None: of every project)."""
        return [self._volume_view(v) for v in self.volumes.list(project=project)]

    def get_volume(self, name: str, project: str = DEFAULT_PROJECT) -> VolumeView:
        return self._volume_view(self.volumes.get(name, project))

    async def create_volume(
        self,
        name: str,
        size: int,
        *,
        pool: str = DEFAULT_POOL,
        fmt: str = "qcow2",
        project: str = DEFAULT_PROJECT,
    ) -> VolumeView:
        check_name(name, what="volume name")
        if fmt not in ("qcow2", "raw"):
            raise InvalidInput(f"volume format '{fmt}'", hint="use qcow2 or raw")
        target_pool = self.pools.get(pool)
        record = VolumeRecord(uuid.uuid4().hex, project, name, pool, fmt, size, None, now())
        path = self._file(record, target_pool)
        async with self._lock, self.vms.locks[ProjectKey(project)]:
            self._check_quota(project, size)
            if path.exists():
                raise Conflict(f"'{path}' already exists", hint="pick another volume name")
            async with revert_on_error() as undo:
                if not path.parent.exists():
                    path.parent.mkdir(parents=True)
                    undo.push("remove project folder", lambda: path.parent.rmdir())
                # Pushed after: a qemu-img that fails halfway may leave a partial file.
                undo.push("remove volume file", lambda: path.unlink(missing_ok=True))
                await self.vms.node.make_image(path, fmt, size)
                self.volumes.insert(record)
        return self._volume_view(record)

    async def delete_volume(self, name: str, project: str = DEFAULT_PROJECT) -> None:
        async with self._lock:
            volume = self.volumes.get(name, project)
            if volume.vm_id is not None:
                view = self._volume_view(volume)
                raise Conflict(
                    f"volume '{name}' is in use by VM '{view.vm}'",
                    hint=f"detach it from VM '{view.vm}' first",
                    details={"volume": name, "vm": view.vm},
                    action=NextStep.DETACH_VOLUME,
                )
            path = self._file(volume, self.pools.get(volume.pool))
            self.volumes.delete(volume.id)
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the project's folder, once empty
                path.parent.rmdir()

    async def resize_volume(
        self, name: str, size: int, project: str = DEFAULT_PROJECT
    ) -> VolumeView:
        volume = self.volumes.get(name, project)
        if size < volume.size:
            raise InvalidInput(
                f"volume '{name}' is {format_size(volume.size)}; volumes only grow",
                hint=f"give a size over {format_size(volume.size)}",
            )
        path = self._file(volume, self.pools.get(volume.pool))
        async with self.vms.locks[ProjectKey(project)]:
            self._check_quota(project, size - volume.size)
        record = self.vms.repo.by_id(volume.vm_id) if volume.vm_id else None
        if record is not None and self.vms.node.is_running(record.id):
            async with self.vms.locks[record.id]:
                disk = next(d for d in record.config.data_disks if d.volume == volume.id)
                await self.vms.node.resize_disk(record.id, size, disk)
        else:
            await self.vms.node.resize_image(path, volume.format, size)
        self.volumes.set_size(volume.id, size)
        return self.get_volume(name, project)

    async def attach(self, name: str, vm_name: str, project: str = DEFAULT_PROJECT) -> VolumeView:
        """Attach a volume: to a stopped VM on any machine, to a running one on q35 (hotplug).
        Volume and VM are in the same project."""
        volume = self.volumes.get(name, project)
        record = self.vms.repo.get(vm_name, project)
        async with self._lock, self.vms.locks[record.id]:
            if volume.vm_id is not None:
                owner = self._volume_view(volume).vm
                raise Conflict(
                    f"volume '{name}' is already attached to VM '{owner}'",
                    hint=f"detach it from VM '{owner}' first",
                    details={"volume": name, "vm": owner},
                    action=NextStep.DETACH_VOLUME,
                )
            config = record.config
            used = {d.slot for d in config.data_disks}
            slots = self.vms.node.capabilities(config).disk_slots
            free = [s for s in range(slots) if s not in used]
            if not free:
                raise ResourceLimit(
                    f"VM '{vm_name}' has {len(used)} volumes attached, the most it can take",
                    hint="detach one first",
                )
            path = self._file(volume, self.pools.get(volume.pool))
            disk = DataDisk.model_validate(
                {"volume": volume.id, "path": str(path), "format": volume.format, "slot": free[0]}
            )
            config = config.model_copy(update={"data_disks": (*config.data_disks, disk)})
            if await self._live(record, "attach a volume to"):
                await self.vms.node.plug_disk(record.id, config, disk)
            self.vms.repo.set_config(config)
            self.volumes.set_vm(volume.id, record.id)
        return self.get_volume(name, project)

    async def detach(self, name: str, vm_name: str, project: str = DEFAULT_PROJECT) -> VolumeView:
        """Detach a volume: from a stopped VM, or from a running q35 VM (the guest lets go)."""
        volume = self.volumes.get(name, project)
        record = self.vms.repo.get(vm_name, project)
        if volume.vm_id != record.id:
            raise Conflict(
                f"volume '{name}' is not attached to VM '{vm_name}'",
                hint="list the volumes to see where each is attached",
                action=NextStep.LIST_VOLUMES,
            )
        async with self._lock, self.vms.locks[record.id]:
            live = await self._live(record, "detach a volume from")
            (disk,) = [d for d in record.config.data_disks if d.volume == volume.id]
            if live:
                await self.vms.node.unplug_disk(record.id, disk)
            disks = tuple(d for d in record.config.data_disks if d.volume != volume.id)
            self.vms.repo.set_config(record.config.model_copy(update={"data_disks": disks}))
            self.volumes.set_vm(volume.id, None)
        return self.get_volume(name, project)

    async def _live(self, record: VMRecord, action: str) -> bool:
        """False for a stopped VM; True for a running VM that takes hotplug; refused
        otherwise."""
        state = await self.vms.state_of(record)
        if state in STOPPED:
            return False
        hotplug = self.vms.node.capabilities(record.config).hotplug
        if state in LIVE and self.vms.node.is_running(record.id) and hotplug:
            return True
        why = (
            f"its machine ({record.config.machine}, virtio-mmio) has no hotplug bus"
            if not hotplug
            else f"it is {state.value}"
        )
        raise Conflict(
            f"cannot {action} VM '{record.name}' while it is {state.value}: {why}",
            hint="stop the VM first; VMs on the q35 machine take volumes while they run",
            details={"state": state.value, "machine": record.config.machine, "vm": record.name},
            action=NextStep.STOP_VM,
        )

    # --- root disks -----------------------------------------------------------------

    async def resize_vm_disk(
        self, vm_name: str, size: int, project: str = DEFAULT_PROJECT
    ) -> VMView:
        """Grow a VM's root disk: offline with qemu-img, online with QMP block_resize."""
        record = self.vms.repo.get(vm_name, project)
        config = record.config
        if size < config.disk_size:
            raise InvalidInput(
                f"VM '{vm_name}' has a {format_size(config.disk_size)} disk; disks only grow",
                hint=f"give a size over {format_size(config.disk_size)}",
            )
        async with self.vms.locks[ProjectKey(project)]:
            self._check_quota(project, size - config.disk_size)
        async with self.vms.locks[record.id]:
            state = await self.vms.state_of(record)
            if state in LIVE and self.vms.node.is_running(record.id):
                await self.vms.node.resize_disk(record.id, size)
            elif state in STOPPED:
                await self.vms.node.resize_root_image(config, size)
            else:
                raise Conflict(
                    f"cannot resize VM '{vm_name}' while it is {state.value}",
                    hint="wait until it is running or stopped",
                )
            self.vms.repo.set_config(config.model_copy(update={"disk_size": size}))
        return await self.vms.get(vm_name, project)
