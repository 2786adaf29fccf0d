"""Snapshots of a VM: create, list (a tree), restore, delete.

Design (works for every VM, UEFI ones included; QEMU's internal snapshots refuse
any non-qcow2 disk such as a pflash variable store):

* **Disk**: external qcow2 snapshots. The VM's disk file stays where it is,
  frozen, as the snapshot's layer; a new empty overlay on top of it becomes the
  VM's disk (see :mod:`hangar.services.qemu.layers`). On a running VM QEMU
  opens the overlay and switches to it with ``blockdev-snapshot`` (the guest
  sees nothing).
* **Memory** (``--memory``, running VMs): paused at the same moment as the disk
  snapshot, RAM and device state are written as a migration stream to a file.
  Restore starts a new QEMU from the snapshot's stored config with ``-incoming
  defer`` on a new overlay of the frozen layer (so the snapshot stays reusable).
* **Kept files**: per-VM files outside the disks (a UEFI variable store) are
  copied into the snapshot and back; see :func:`kept_files`.

A restore over state that would be lost (a running VM, or a stopped VM whose
disk changed since its snapshot) needs ``force``: hangar never discards it silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from pathlib import Path

from pydantic import BaseModel

from hangar.errors import Conflict, NextStep, QemuFailed, StateConflict
from hangar.names import check_name
from hangar.runner import CommandRunner
from hangar.services.lifecycle import PowerState
from hangar.services.operations import OperationCancelled
from hangar.services.progress import Reporter, quiet, span
from hangar.services.qemu import img, layers
from hangar.services.qemu.argv import VMFiles
from hangar.services.qmp import migration
from hangar.services.qmp.monitor import Monitor
from hangar.services.snapshots import tree
from hangar.services.supervisor import Runtime
from hangar.services.templates import reseed
from hangar.services.undo import RevertStack, revert_on_error
from hangar.services.vms import VMService, VMView
from hangar.spec.vm import VMConfig
from hangar.state.snapshots import SnapshotRepository, new_record
from hangar.state.vms import DEFAULT_PROJECT, VMRecord

log = logging.getLogger(__name__)

LIVE = (PowerState.RUNNING, PowerState.PAUSED)
STOPPED = (PowerState.STOPPED, PowerState.CRASHED)
MEMORY = "memory.bin"
KEPT = "kept"


def kept_files(config: VMConfig, files: VMFiles) -> list[Path]:
    """Per-VM files besides the disks that a snapshot keeps and a restore puts back:
    the UEFI variable store (pflash is a block device, so no migration stream holds it)."""
    return [files.efivars] if config.firmware == "uefi" else []


class SnapshotView(BaseModel):
    name: str
    vm: str
    parent: str | None
    children: list[str]
    depth: int
    memory: bool
    size: int
    created_at: str
    current: bool  # the VM's disk is built on it: the next snapshot's parent
    cpus: int
    memory_size: int


class SnapshotService:
    def __init__(self, vms: VMService, repo: SnapshotRepository, runner: CommandRunner):
        self.vms = vms
        self.repo = repo
        self.runner = runner

    # --- reading -------------------------------------------------------------------

    def list(self, vm_name: str, project: str = DEFAULT_PROJECT) -> list[SnapshotView]:
        """The VM's snapshots in tree order (parents first)."""
        record = self.vms.repo.get(vm_name, project)
        snaps = self.repo.list(record.id)
        head = self.repo.head(record.id)
        return [self._view(record, node, head) for node in tree.walk(snaps)]

    def get(self, vm_name: str, name: str, project: str = DEFAULT_PROJECT) -> SnapshotView:
        for view in self.list(vm_name, project):
            if view.name == name:
                return view
        record = self.vms.repo.get(vm_name, project)
        self.repo.get(record.id, name, vm_name)  # raises NotFound
        raise AssertionError("unreachable")

    def _view(self, record: VMRecord, node: tree.Node, head: str | None) -> SnapshotView:
        snap = node.snapshot
        parent = None
        if snap.parent is not None:
            found = [s for s in self.repo.list(record.id) if s.id == snap.parent]
            parent = found[0].name if found else None
        return SnapshotView(
            name=snap.name,
            vm=record.name,
            parent=parent,
            children=list(node.children),
            depth=node.depth,
            memory=snap.memory is not None,
            size=snap.size,
            created_at=snap.created_at,
            current=snap.id == head,
            cpus=snap.config.cpus,
            memory_size=snap.config.memory,
        )

    # --- create --------------------------------------------------------------------

    async def create(
        self,
        vm_name: str,
        name: str,
        *,
        memory: bool = False,
        project: str = DEFAULT_PROJECT,
        progress: Reporter = quiet,
    ) -> SnapshotView:
        """Snapshot the VM's disk (always) and, with ``memory``, its RAM and devices.

        A running VM keeps running (paused meanwhile when ``memory``). Refused, with
        nothing created, for a bad name, a taken name, ``memory`` on a VM that is not
        running, or ``memory`` with volumes attached (they are not part of snapshots).
        """
        check_name(name, what="snapshot name")
        record = self.vms.repo.get(vm_name, project)
        async with self.vms.locks[record.id]:
            record = self.vms.repo.get(vm_name, project)
            if self.repo.find(record.id, name) is not None:
                raise Conflict(
                    f"VM '{vm_name}' already has a snapshot named '{name}'",
                    hint="pick another name, or delete that snapshot first",
                )
            state = await self.vms.state_of(record)
            runtime = self.vms.supervisor.get(record.id)
            live = state in LIVE and runtime is not None
            if state not in (*LIVE, *STOPPED):
                raise StateConflict(vm_name, "snapshot", state.value, ["running", "stopped"])
            if memory and not live:
                raise StateConflict(
                    vm_name, "take a memory snapshot of", state.value, ["running", "paused"]
                )
            if memory and record.config.data_disks:
                raise Conflict(
                    f"VM '{vm_name}' has volumes attached: a memory snapshot would not match "
                    "them when restored (volumes are not part of snapshots)",
                    hint="detach the volumes, or take a disk-only snapshot",
                )
            files = self.vms.files(record.config)
            snap_id = uuid.uuid4().hex
            folder = files.snapshots / snap_id
            async with revert_on_error() as undo:
                folder.mkdir(parents=True)
                undo.push("remove snapshot folder", lambda: shutil.rmtree(folder, True))
                frozen = files.disk
                saved, failure = await self._freeze(
                    record, files, folder, runtime if live else None, memory, undo, progress
                )
                self.repo.insert(
                    new_record(
                        snapshot_id=snap_id,
                        vm_id=record.id,
                        name=name,
                        parent=self.repo.head(record.id),
                        disk=str(frozen),
                        memory=str(saved) if saved else None,
                        config=record.config,
                        size=_size(folder) + frozen.stat().st_size,
                    )
                )
            if failure is not None:
                kept = "with its memory" if saved else "with the disk only"
                raise QemuFailed(
                    f"snapshot '{name}' of VM '{vm_name}' was taken {kept}, but: {failure}",
                    hint="check the VM's state and its list of snapshots",
                    details={"vm": vm_name},
                    action=NextStep.LIST_SNAPSHOTS,
                )
        return self.get(vm_name, name, project)

    async def _freeze(
        self,
        record: VMRecord,
        files: VMFiles,
        folder: Path,
        runtime: Runtime | None,
        memory: bool,
        undo: RevertStack,
        progress: Reporter,
    ) -> tuple[Path | None, str | None]:
        """Freeze the VM's disk file under a new overlay; save the memory into ``folder``.

        Returns the saved memory file, and why saving it failed once the disk snapshot
        could no longer be undone (it is then kept, without memory).
        """
        frozen = files.disk
        overlay = layers.new_layer(files.dir)
        size = record.config.disk_size
        kept = kept_files(record.config, files)
        if runtime is None:
            save_kept(kept, folder / KEPT)
            await asyncio.to_thread(img.create_overlay, self.runner, frozen, overlay, size)
            undo.push("remove new overlay", lambda: overlay.unlink(missing_ok=True))
            layers.point_to(files.dir, overlay)
            undo.push("point back to the disk", lambda: layers.point_to(files.dir, frozen))
            return None, None
        monitor = runtime.monitor
        was_running = await runtime.power_state() is PowerState.RUNNING
        if memory and was_running:
            progress("pausing the VM", percent=1)
            await monitor.stop()
            undo.push("resume the VM", monitor.cont)
        # With memory: copied while paused, so the variables match the saved guest.
        save_kept(kept, folder / KEPT)
        top = await migration.root_node(monitor)
        # -u: QEMU holds the frozen file's write lock until the switch.
        await asyncio.to_thread(img.create_overlay_unsafe, self.runner, frozen, overlay, size)
        undo.push("remove new overlay", lambda: overlay.unlink(missing_ok=True))
        node = await migration.add_overlay(monitor, overlay)
        undo.push("close new overlay", lambda: monitor.execute("blockdev-del", {"node-name": node}))
        await migration.switch_to_overlay(monitor, top, node)
        # From here the frozen layer is part of the running disk: keep it whatever happens.
        undo.commit()
        layers.point_to(files.dir, overlay)
        if not memory:
            return None, None
        target = folder / MEMORY
        try:
            await migration.save_memory(
                monitor, target, span(progress, "saving memory and device state", 5, 98)
            )
        except (QemuFailed, OSError, OperationCancelled) as exc:
            await _resume(monitor, was_running)
            return None, "cancelled on request" if isinstance(exc, OperationCancelled) else str(exc)
        # cont takes the disks back from the finished migration; a VM paused before
        # runs for a moment then, as QEMU 7.2 has no other way to re-activate them.
        try:
            await _resume(monitor, was_running)
        except QemuFailed as exc:
            return target, f"the VM did not resume: {exc.message}"
        return target, None

    # --- restore -------------------------------------------------------------------

    async def restore(
        self,
        vm_name: str,
        name: str,
        *,
        force: bool = False,
        project: str = DEFAULT_PROJECT,
        progress: Reporter = quiet,
    ) -> VMView:
        """Bring back the snapshot's disk, the VM's config of that moment and, when it
        has memory, the running guest. Without memory the VM is left stopped.

        Refused without ``force`` when current state would be lost: the VM runs, or
        its disk changed since the snapshot it is built on.
        """
        record = self.vms.repo.get(vm_name, project)
        async with self.vms.locks[record.id]:
            record = self.vms.repo.get(vm_name, project)
            snap = self.repo.get(record.id, name, vm_name)
            files = self.vms.files(record.config)
            state = await self.vms.state_of(record)
            runtime = self.vms.supervisor.get(record.id)
            if state not in (*LIVE, *STOPPED):
                raise StateConflict(vm_name, "restore", state.value, ["running", "stopped"])
            if snap.memory is not None and record.config.data_disks:
                raise Conflict(
                    f"VM '{vm_name}' has volumes attached; the snapshot's memory does not "
                    "know them",
                    hint="detach the volumes first",
                )
            if not force:
                await self._refuse_loss(record, files, state, name)
            config = snap.config.model_copy(
                update={
                    "id": record.id,
                    "name": record.name,
                    "data_disks": record.config.data_disks,
                }
            )
            if runtime is not None and state in LIVE:
                progress("stopping the VM", percent=2)
                await self.vms.force_stop_locked(runtime, f"stopped: restoring snapshot '{name}'")
            if snap.memory is not None:
                # Only now: the VM's own QEMU held its forwarded ports until it stopped.
                self.vms.check_ports(config)
            previous = files.disk
            overlay = layers.new_layer(files.dir)
            async with revert_on_error() as undo:
                await asyncio.to_thread(
                    img.create_overlay, self.runner, Path(snap.disk), overlay, config.disk_size
                )
                undo.push("remove new overlay", lambda: overlay.unlink(missing_ok=True))
                layers.point_to(files.dir, overlay)
                undo.push("point back to the disk", lambda: layers.point_to(files.dir, previous))
                restore_kept(_folder(files, snap.id) / KEPT, kept_files(config, files))
                self.vms.repo.set_config(config)
                undo.push("restore config", lambda: self.vms.repo.set_config(record.config))
                if snap.memory is not None:
                    progress("loading memory and device state", percent=30)
                    await self.vms.start_locked(
                        self.vms.repo.get(vm_name, project),
                        memory=migration.SavedGuest(Path(snap.memory)),
                    )
                    if reseed.needs_reseed(config):
                        agent = self.vms.agent(config) if config.agent else None
                        await reseed.reseed(config, files, agent)
                self.repo.set_head(record.id, snap.id)
            # The disk it replaced held only what no snapshot keeps (force said so).
            if previous not in {Path(s.disk) for s in self.repo.list(record.id)}:
                previous.unlink(missing_ok=True)
        return await self.vms.get(vm_name, project)

    async def _refuse_loss(
        self, record: VMRecord, files: VMFiles, state: PowerState, name: str
    ) -> None:
        if state in LIVE:
            raise Conflict(
                f"VM '{record.name}' is {state.value}: restoring '{name}' discards its "
                "current state",
                hint="force the restore, or first keep the running state in a snapshot with memory",
                details={"state": state.value, "vm": record.name, "memory": True},
                action=NextStep.FORCE_OR_SNAPSHOT,
            )
        if await asyncio.to_thread(img.has_own_data, self.runner, files.disk):
            raise Conflict(
                f"the disk of VM '{record.name}' changed since its last snapshot: restoring "
                f"'{name}' discards those changes",
                hint="force the restore, or first keep them in a snapshot",
                details={"vm": record.name, "memory": False},
                action=NextStep.FORCE_OR_SNAPSHOT,
            )

    # --- delete --------------------------------------------------------------------

    async def delete(
        self, vm_name: str, name: str, *, project: str = DEFAULT_PROJECT, progress: Reporter = quiet
    ) -> None:
        """Delete a snapshot. Layers built on it (child snapshots, the VM's disk) get its
        data merged in first, so they keep their content. Refused, with nothing changed,
        when a running QEMU has those layers open (stop the VM first)."""
        record = self.vms.repo.get(vm_name, project)
        async with self.vms.locks[record.id]:
            snap = self.repo.get(record.id, name, vm_name)
            snaps = self.repo.list(record.id)
            head = self.repo.head(record.id)
            state = await self.vms.state_of(record)
            running = state not in STOPPED
            plan = tree.plan_delete(snaps, snap, head, running)
            if plan.refusal is not None:
                raise Conflict(
                    plan.refusal,
                    hint="stop the VM first",
                    details={"vm": vm_name},
                    action=NextStep.STOP_VM,
                )
            layers = [Path(c.disk) for c in plan.merge_into_children]
            if plan.merge_into_vm_disk:
                layers.append(self.vms.files(record.config).disk)
            base = await asyncio.to_thread(img.backing_file, self.runner, Path(snap.disk))
            for layer in layers:
                report = span(progress, f"merging '{name}' into {layer.parent.name}", 0, 95)
                await asyncio.to_thread(img.rebase, self.runner, layer, base, progress=report)
            self.repo.remove(snap, new_head=snap.parent, head_changes=plan.merge_into_vm_disk)
            Path(snap.disk).unlink(missing_ok=True)
            files = self.vms.files(record.config)
            shutil.rmtree(_folder(files, snap.id), ignore_errors=True)
            for child in plan.merge_into_children:
                self.repo.set_size(child.id, _snapshot_size(files, child.id, Path(child.disk)))


async def _resume(monitor: Monitor, was_running: bool) -> None:
    await monitor.cont()
    if not was_running:
        await monitor.stop()


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _folder(files: VMFiles, snapshot_id: str) -> Path:
    """A snapshot's own folder: saved memory and kept files (its disk layer sits beside
    the VM's other disk files)."""
    return files.snapshots / snapshot_id


def _snapshot_size(files: VMFiles, snapshot_id: str, disk: Path) -> int:
    return _size(_folder(files, snapshot_id)) + disk.stat().st_size


def save_kept(paths: list[Path], into: Path) -> None:
    """Copy each kept file into ``into`` under its own name."""
    for path in paths:
        into.mkdir(exist_ok=True)
        shutil.copy2(path, into / path.name)


def restore_kept(source: Path, paths: list[Path]) -> None:
    """Put kept files back where the config wants them."""
    for path in paths:
        saved = source / path.name
        if saved.exists():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            shutil.copy2(saved, path)
