"""VM lifecycle use cases: create, start, stop, pause, resume, restart, delete, and
what follows a VM's end (an installer's ISO detached, a guest reboot restarted)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from hangar.errors import (
    Conflict,
    HangarError,
    StateConflict,
)
from hangar.names import check_name
from hangar.node.base import Outcome, ReadyHook, Running, SavedGuest
from hangar.node.local import LocalNode
from hangar.services import guest_files
from hangar.services.lifecycle import Action, PowerState, check
from hangar.services.undo import revert_on_error
from hangar.services.vms.core import DEFAULT_STOP_TIMEOUT, StopResult, VMCore, VMView
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMConfig, VMCreate
from hangar.state.locks import ProjectKey
from hangar.state.vms import DEFAULT_PROJECT, VMRecord

log = logging.getLogger(__name__)


class VMLifecycle(VMCore):
    async def create(
        self,
        request: VMCreate,
        *,
        start: bool = True,
        full: bool = False,
        project: str = DEFAULT_PROJECT,
    ) -> VMView:
        """Create a VM from an image (a linked clone of its disk) and start it unless told not to.

        With ``full``, the VM gets an independent copy of the image's disk and its
        own hard links to the kernel and initramfs: it no longer needs the image.
        Nothing is left behind when any step fails (the quota check included): no row,
        no file, no process.
        """
        check_name(request.name)
        async with self._locks[f"name:{project}/{request.name}"]:
            if self.repo.find(request.name, project) is not None:
                raise Conflict(
                    f"a VM named '{request.name}' already exists in project '{project}'",
                    hint="pick another name, or delete the existing VM first",
                )
            image = self.images.get(request.image, project) if request.image else None
            iso_source = guest_files.check_iso(request.iso) if request.iso else None
            image_dir = self.images.path(image.name) if image else None
            vm_id = uuid.uuid4().hex
            boot_dir = self.paths.vm_dir(vm_id) if full or image_dir is None else image_dir
            config = resolve(
                request,
                image,
                self.host,
                vm_id=vm_id,
                kernel_path=str(boot_dir / image.kernel) if image and image.kernel else None,
                initrd_path=str(boot_dir / image.initrd) if image and image.initrd else None,
            )
            if config.cloud_init is not None:
                config = guest_files.with_ssh_forward(config, self.port_owners(config))
            self._check_ports(config)
            async with revert_on_error() as undo:
                # The project lock spans address allocation and insert, so concurrent
                # launches cannot take the same address on one of the project's
                # networks (quotas are admitted by revision, not by this lock); the
                # (slow) start runs outside it.
                async with self._locks[ProjectKey(project)]:
                    config = self._prepare_networks(config, project)
                    if self.quota_check is not None:
                        undo.push("release quota", await self.quota_check(project, config))
                    await self.node.make_files(
                        config, image=image, image_dir=image_dir, full=full, iso=iso_source
                    )
                    undo.push("remove VM files", lambda: self.node.remove_files(config))
                    record = self.repo.insert(config, PowerState.STOPPED, project)
                    undo.push("delete VM row", lambda: self.repo.delete(vm_id))
                if self.networks is not None:
                    networks = self.networks
                    undo.push("detach from networks", lambda: networks.detach_vm(config))
                    await networks.attach_vm(config, project)
                if start:
                    async with self._locks[vm_id]:
                        await self._start(record)
            return await self.get(config.name, project)

    async def adopt_copy(
        self,
        config: VMConfig,
        *,
        start: bool,
        project: str = DEFAULT_PROJECT,
        memory: SavedGuest | None = None,
        ready: ReadyHook | None = None,
    ) -> VMView:
        """Register a VM whose folder (disk and boot files) a copy has just filled.

        The project's quotas apply as to a launch. The caller removes the folder if
        this fails; the row is removed here. ``memory`` (a saved migration stream)
        and ``ready`` are passed on to the start.
        """
        self._check_ports(config)
        async with revert_on_error() as undo:
            async with self._locks[ProjectKey(project)]:
                if self.quota_check is not None:
                    undo.push("release quota", await self.quota_check(project, config))
                config = self._prepare_networks(config, project)
                record = self.repo.insert(config, PowerState.STOPPED, project)
                undo.push("delete VM row", lambda: self.repo.delete(config.id))
            if self.networks is not None:
                networks, prepared = self.networks, config
                undo.push("detach from networks", lambda: networks.detach_vm(prepared))
                await networks.attach_vm(config, project)
            if start:
                async with self._locks[config.id]:
                    await self._start(record, memory=memory, ready=ready)
        return await self.get(config.name, project)

    async def delete(
        self, name: str, *, force: bool = False, project: str = DEFAULT_PROJECT
    ) -> None:
        """Delete a VM and every file hangard made for it. ``force`` stops it first."""
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            state = await self.state_of(record)
            check(name, Action.FORCE_DELETE if force else Action.DELETE, state)
            if self.node.is_running(record.id):
                await self.node.kill(record.id, "deleted")
            if self.networks is not None:
                await self.networks.detach_vm(record.config)
            self.node.remove_files(record.config)
            self.repo.delete(record.id)
        self._locks.discard(record.id)
        if isinstance(self.node, LocalNode):
            self.node.forget(record.id)

    async def start(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.START, await self.state_of(record))
            self._check_ports(record.config)
            await self._start(record)
        return await self.get(name, project)

    async def stop(
        self,
        name: str,
        *,
        force: bool = False,
        timeout: float = DEFAULT_STOP_TIMEOUT,
        project: str = DEFAULT_PROJECT,
    ) -> StopResult:
        """Stop a VM: ACPI power button, wait ``timeout`` s, then force. Says which happened."""
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            state = await self.state_of(record)
            check(name, Action.FORCE_STOP if force else Action.STOP, state)
            method = await self._stop(record.config, force=force, timeout=timeout)
        return StopResult(vm=await self.get(name, project), method=method)

    async def _stop(self, config: VMConfig, *, force: bool, timeout: float) -> str:
        if force:
            await self.node.kill(config.id, "force-stopped")
            return "forced"
        return await self.node.stop(config, timeout=timeout)

    async def start_locked(
        self,
        record: VMRecord,
        *,
        memory: SavedGuest | None = None,
        ready: ReadyHook | None = None,
    ) -> Running:
        """Start a VM for another service that holds its lock (see :meth:`_start`)."""
        return await self._start(record, memory=memory, ready=ready)

    async def force_stop_locked(self, runtime: Running, reason: str) -> None:
        """Stop a VM now for another service that holds its lock."""
        await self.node.kill(runtime.vm_id, reason)

    async def pause(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.PAUSE, await self.state_of(record))
            await self.node.pause(record.id)
            self.repo.set_state(record.id, PowerState.PAUSED)
        return await self.get(name, project)

    async def resume(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.RESUME, await self.state_of(record))
            await self.node.resume(record.id)
            self.repo.set_state(record.id, PowerState.RUNNING)
        return await self.get(name, project)

    async def restart(
        self,
        name: str,
        *,
        force: bool = False,
        timeout: float = DEFAULT_STOP_TIMEOUT,
        project: str = DEFAULT_PROJECT,
    ) -> StopResult:
        """Stop (as ``stop`` does) and start again, in a fresh QEMU process."""
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.RESTART, await self.state_of(record))
            method = await self._stop(record.config, force=force, timeout=timeout)
            await self._start(self.repo.get(name, project))
        return StopResult(vm=await self.get(name, project), method=method)

    async def detach_iso(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        """Detach the installer ISO of a stopped VM (it then boots from its disk alone)."""
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            state = await self.state_of(record)
            if record.config.iso is None:
                raise Conflict(f"VM '{name}' has no ISO attached", hint="nothing to detach")
            if state not in (PowerState.STOPPED, PowerState.CRASHED):
                raise StateConflict(name, "detach the ISO of", state.value, ["stopped", "crashed"])
            self._detach_iso(record.config)
        return await self.get(name, project)

    async def _on_exit(self, vm_id: str, name: str, outcome: Outcome) -> None:
        log.info("VM %s: %s (%s)", name, outcome.state, outcome.reason)
        reason = outcome.reason
        record = self.repo.by_id(vm_id)
        if outcome.guest_poweroff and record is not None and record.config.iso is not None:
            # An installer that powers the guest off has finished: the next boot is
            # from the disk alone (see README, "ISO installs").
            self._detach_iso(record.config)
            reason += f"; installer ISO '{record.config.iso}' detached"
        self.repo.set_state(vm_id, outcome.state, reason)
        record = self.repo.by_id(vm_id)
        if outcome.reboot and record is not None:
            task = asyncio.create_task(self._reboot(name, record.project))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reboot(self, name: str, project: str) -> None:
        try:
            await self.start(name, project)
        except HangarError as exc:
            log.warning("VM %s: restart after guest reboot failed: %s", name, exc)
