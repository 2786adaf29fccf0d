"""VM lifecycle use cases: create, start, stop, pause, resume, restart, delete.

The database holds intent and the last recorded state; a running QEMU holds
the truth (asked over QMP). Each VM has one lock: actions on one VM run one at
a time; actions on different VMs run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from hangar.errors import Conflict, HangarError, QemuFailed, StateConflict
from hangar.host.facts import HostFacts
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services import guest_files, ports
from hangar.services.lifecycle import Action, PowerState, check
from hangar.services.qemu import img, process
from hangar.services.qemu.argv import VMFiles, render_argv
from hangar.services.qga.agent import GuestAgent
from hangar.services.storage.images import ImageStore
from hangar.services.supervisor import Outcome, Runtime, Supervisor
from hangar.services.undo import revert_on_error
from hangar.spec.image import ImageManifest
from hangar.spec.resolve import resolve
from hangar.spec.vm import PortForward, VMConfig, VMCreate, check_name
from hangar.state.vms import DEFAULT_PROJECT, VMRecord, VMRepository

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 30.0
FORCE_STOP_TIMEOUT = 10.0


class VMView(BaseModel):
    """A VM as the API shows it."""

    id: str
    name: str
    project: str
    image: str
    state: PowerState
    state_reason: str
    cpus: int
    memory: int
    disk_size: int
    machine: str
    accelerator: str
    pid: int | None
    forwards: list[PortForward]
    macs: list[str]
    boot_marker: str
    created_at: str
    serial_log: str
    # None: direct kernel boot; else the firmware that boots the disk.
    firmware: str | None = None
    # The installer ISO's file name while one is attached.
    iso: str | None = None
    graphics: bool = False
    agent: bool = False
    # cloud images: the default user and the SSH keys it was given (public halves).
    user: str | None = None
    ssh_keys: list[str] = []


class StopResult(BaseModel):
    vm: VMView
    method: str


# Raises (e.g. QuotaExceeded) when a resolved config does not fit its project.
QuotaCheck = Callable[[str, VMConfig], None]


class VMService:
    def __init__(
        self,
        paths: Paths,
        repo: VMRepository,
        images: ImageStore,
        host: HostFacts,
        runner: CommandRunner,
        quota_check: QuotaCheck | None = None,
    ):
        self.paths = paths
        self.quota_check = quota_check
        self.repo = repo
        self.images = images
        self.host = host
        self.runner = runner
        self.supervisor = Supervisor(self._on_exit)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[None]] = set()
        self._agents: dict[str, GuestAgent] = {}

    # --- reading -----------------------------------------------------------------

    def files(self, config: VMConfig) -> VMFiles:
        return VMFiles(dir=self.paths.vm_dir(config.id), runtime=self.paths.vm_runtime(config.id))

    async def state_of(self, record: VMRecord) -> PowerState:
        runtime = self.supervisor.get(record.id)
        if runtime is not None:
            return await runtime.power_state()
        return PowerState(record.state)

    async def view(self, record: VMRecord) -> VMView:
        config = record.config
        runtime = self.supervisor.get(record.id)
        return VMView(
            id=config.id,
            name=config.name,
            project=record.project,
            image=config.image,
            state=await self.state_of(record),
            state_reason=record.state_reason,
            cpus=config.cpus,
            memory=config.memory,
            disk_size=config.disk_size,
            machine=config.machine,
            accelerator=self.host.accelerator,
            pid=runtime.pid if runtime else None,
            forwards=[f for nic in config.nics for f in nic.forwards],
            macs=[nic.mac for nic in config.nics],
            boot_marker=config.boot_marker,
            created_at=record.created_at,
            serial_log=str(self.files(config).serial_log),
            firmware=config.firmware,
            iso=config.iso,
            graphics=config.graphics,
            agent=config.agent,
            user=config.cloud_init.user if config.cloud_init else None,
            ssh_keys=list(config.cloud_init.ssh_keys) if config.cloud_init else [],
        )

    async def get(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        return await self.view(self.repo.get(name, project))

    async def list(self, project: str | None = None) -> list[VMView]:
        """The VMs of ``project``, or of all projects when it is None."""
        records = self.repo.list(project)
        # One after the other: a view awaits nothing slow, and 1,000 tasks cost more.
        return [await self.view(r) for r in records]

    async def console_socket(self, name: str, project: str = DEFAULT_PROJECT) -> Path:
        """The serial console's unix socket of a running or paused VM."""
        record = self.repo.get(name, project)
        state = await self.state_of(record)
        if state not in (PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING):
            raise StateConflict(
                name, "attach to the console of", state.value, ["running", "paused"]
            )
        return self.files(record.config).console_socket

    # --- create and delete --------------------------------------------------------

    @property
    def locks(self) -> defaultdict[str, asyncio.Lock]:
        """The per-VM locks (by VM id): other services take them to act on a VM's files."""
        return self._locks

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
            image = self.images.get(request.image) if request.image else None
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
            files = self.files(config)
            async with revert_on_error() as undo:
                # The project lock spans check and insert, so concurrent launches cannot
                # both fit in the last free slot; the (slow) start runs outside it.
                async with self._locks[f"project:{project}"]:
                    if self.quota_check is not None:
                        self.quota_check(project, config)
                    files.dir.mkdir(parents=True)
                    undo.push(
                        "remove VM folder", lambda: shutil.rmtree(files.dir, ignore_errors=True)
                    )
                    if image is None or image_dir is None:
                        await asyncio.to_thread(
                            img.create, self.runner, files.disk, "qcow2", config.disk_size
                        )
                    elif full:
                        await asyncio.to_thread(
                            _full_copy, self.runner, image_dir, image, files.disk, config.disk_size
                        )
                    else:
                        await asyncio.to_thread(
                            img.create_overlay,
                            self.runner,
                            image_dir / image.disk,
                            files.disk,
                            config.disk_size,
                        )
                    await asyncio.to_thread(
                        guest_files.prepare, config, files, self.host, iso_source
                    )
                    record = self.repo.insert(config, PowerState.STOPPED, project)
                    undo.push("delete VM row", lambda: self.repo.delete(vm_id))
                if start:
                    async with self._locks[vm_id]:
                        await self._start(record)
            return await self.get(config.name, project)

    async def adopt_copy(
        self, config: VMConfig, *, start: bool, project: str = DEFAULT_PROJECT
    ) -> VMView:
        """Register a VM whose folder (disk and boot files) a copy has just filled.

        The project's quotas apply as to a launch. The caller removes the folder if
        this fails; the row is removed here.
        """
        self._check_ports(config)
        async with self._locks[f"project:{project}"]:
            if self.quota_check is not None:
                self.quota_check(project, config)
            record = self.repo.insert(config, PowerState.STOPPED, project)
        if start:
            async with revert_on_error() as undo:
                undo.push("delete VM row", lambda: self.repo.delete(config.id))
                async with self._locks[config.id]:
                    await self._start(record)
        return await self.get(config.name, project)

    async def delete(
        self, name: str, *, force: bool = False, project: str = DEFAULT_PROJECT
    ) -> None:
        """Delete a VM and every file hangard made for it. ``force`` stops it first."""
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            state = await self.state_of(record)
            check(name, Action.FORCE_DELETE if force else Action.DELETE, state)
            runtime = self.supervisor.get(record.id)
            if runtime is not None:
                await self._force_stop(runtime, "deleted")
            files = self.files(record.config)
            shutil.rmtree(files.dir, ignore_errors=True)
            shutil.rmtree(files.runtime, ignore_errors=True)
            self.repo.delete(record.id)
        self._locks.pop(record.id, None)
        self._agents.pop(record.id, None)

    # --- power ----------------------------------------------------------------------

    async def start(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.START, await self.state_of(record))
            self._check_ports(record.config)
            await self._start(record)
        return await self.get(name, project)

    async def _start(self, record: VMRecord) -> Runtime:
        """Start QEMU paused, wire it up over QMP, then continue it."""
        config = record.config
        files = self.files(config)
        argv = render_argv(config, self.host, files)
        self.repo.set_state(record.id, PowerState.STARTING)
        try:
            runtime = await self.supervisor.launch(config.id, config.name, argv, files)
        except HangarError:
            self.repo.set_state(record.id, record.state, record.state_reason)
            raise
        runtime.transition = PowerState.STARTING
        if config.graphics:
            # QEMU made it with its umask; the screen is for hangard's proxy alone.
            with contextlib.suppress(FileNotFoundError):
                os.chmod(files.vnc_socket, 0o600)
        try:
            await runtime.monitor.cont()
        except QemuFailed:
            await self._force_stop(runtime, "failed to start")
            self.repo.set_state(record.id, record.state, record.state_reason)
            raise
        runtime.transition = None
        self.repo.set_state(record.id, PowerState.RUNNING)
        return runtime

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
            runtime = self._runtime(record)
            method = await self._stop(runtime, force=force, timeout=timeout)
        return StopResult(vm=await self.get(name, project), method=method)

    async def _stop(self, runtime: Runtime, *, force: bool, timeout: float) -> str:
        if force:
            await self._force_stop(runtime, "force-stopped")
            return "forced"
        if await runtime.power_state() is PowerState.PAUSED:
            # A paused guest cannot see the power button.
            await runtime.monitor.cont()
        runtime.transition = PowerState.STOPPING
        runtime.stop_reason = "stopped: the guest powered off after the ACPI power button"
        await runtime.monitor.powerdown()
        record = self.repo.by_id(runtime.vm_id)
        agent = self.agent(record.config) if record and record.config.agent else None
        # With an agent: a third of the time for ACPI, then the agent is asked too.
        acpi_wait = timeout / 3 if agent is not None else timeout
        try:
            await asyncio.wait_for(runtime.exited.wait(), acpi_wait)
            return "acpi"
        except TimeoutError:
            pass
        asked = False
        if agent is not None:
            try:
                await agent.call("guest-shutdown", {"mode": "powerdown"})
                asked = True
                runtime.stop_reason = (
                    "stopped: the guest ignored the ACPI power button and powered off "
                    "when its agent asked"
                )
            except HangarError as exc:
                # Perhaps it is shutting down after all (agent already gone): wait on.
                log.info("VM %s: agent shutdown not possible: %s", runtime.name, exc)
            try:
                await asyncio.wait_for(runtime.exited.wait(), timeout - acpi_wait)
                return "agent" if asked else "acpi"
            except TimeoutError:
                pass
        await self._force_stop(
            runtime, f"force-stopped: the guest ignored the ACPI power button for {timeout:g} s"
        )
        return "forced-after-timeout"

    async def _force_stop(self, runtime: Runtime, reason: str) -> None:
        """QMP quit (QEMU flushes disks), SIGKILL if that does not end it."""
        runtime.transition = PowerState.STOPPING
        runtime.stop_reason = reason
        await runtime.monitor.quit()
        try:
            await asyncio.wait_for(runtime.exited.wait(), FORCE_STOP_TIMEOUT)
        except TimeoutError:
            runtime.kill()
            await asyncio.wait_for(runtime.exited.wait(), FORCE_STOP_TIMEOUT)

    async def pause(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.PAUSE, await self.state_of(record))
            await self._runtime(record).monitor.stop()
            self.repo.set_state(record.id, PowerState.PAUSED)
        return await self.get(name, project)

    async def resume(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.RESUME, await self.state_of(record))
            await self._runtime(record).monitor.cont()
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
            method = await self._stop(self._runtime(record), force=force, timeout=timeout)
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

    def _detach_iso(self, config: VMConfig) -> None:
        self.repo.set_config(config.model_copy(update={"iso": None}))
        self.files(config).iso.unlink(missing_ok=True)

    def agent(self, config: VMConfig) -> GuestAgent:
        """The guest agent client of a VM (one per VM: its channel serves one client)."""
        agent = self._agents.get(config.id)
        if agent is None:
            agent = self._agents[config.id] = GuestAgent(
                self.files(config).agent_socket, config.name
            )
        return agent

    def _runtime(self, record: VMRecord) -> Runtime:
        runtime = self.supervisor.get(record.id)
        if runtime is None:
            raise QemuFailed(f"VM '{record.name}' has no running QEMU")
        return runtime

    def port_owners(self, config: VMConfig) -> dict[tuple[str, int], str]:
        return {
            (fwd.protocol, fwd.host_port): other.name
            for other in self.repo.list()
            if other.id != config.id
            for nic in other.config.nics
            for fwd in nic.forwards
        }

    def _check_ports(self, config: VMConfig) -> None:
        owners = self.port_owners(config)
        ports.check_free((f for nic in config.nics for f in nic.forwards), owners=owners)

    # --- supervision ----------------------------------------------------------------

    async def _on_exit(self, runtime: Runtime, outcome: Outcome) -> None:
        log.info("VM %s: %s (%s)", runtime.name, outcome.state, outcome.reason)
        reason = outcome.reason
        record = self.repo.by_id(runtime.vm_id)
        if outcome.guest_poweroff and record is not None and record.config.iso is not None:
            # An installer that powers the guest off has finished: the next boot is
            # from the disk alone (see README, "ISO installs").
            self._detach_iso(record.config)
            reason += f"; installer ISO '{record.config.iso}' detached"
        self.repo.set_state(runtime.vm_id, outcome.state, reason)
        record = self.repo.by_id(runtime.vm_id)
        if outcome.reboot and record is not None:
            task = asyncio.create_task(self._reboot(runtime.name, record.project))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reboot(self, name: str, project: str) -> None:
        try:
            await self.start(name, project)
        except HangarError as exc:
            log.warning("VM %s: restart after guest reboot failed: %s", name, exc)

    async def reconcile(self) -> None:
        """Adopt QEMUs that kept running while hangard was away; record the ones that vanished."""
        for record in self.repo.list():
            files = self.files(record.config)
            runtime = await self.supervisor.adopt(record.id, record.name, files)
            if runtime is not None:
                state = await runtime.power_state()
                self.repo.set_state(record.id, state, "adopted after hangard restarted")
                continue
            if record.state in (PowerState.STOPPED, PowerState.CRASHED):
                continue
            status = process.read_exit_status(files)
            if status is not None and status.clean:
                self.repo.set_state(
                    record.id, PowerState.STOPPED, "QEMU exited while hangard was away"
                )
            else:
                why = status.describe() if status else "QEMU vanished"
                tail = process.serial_tail(files, 8)
                reason = f"{why} while hangard was away" + (
                    "; last serial output:\n" + "\n".join(tail) if tail else ""
                )
                self.repo.set_state(record.id, PowerState.CRASHED, reason)

    async def shutdown(self) -> None:
        """hangard is stopping: let go of every QEMU, leaving the VMs running."""
        for task in list(self._background):
            task.cancel()
        await self.supervisor.detach_all()


def link_boot_files(config: VMConfig, folder: Path) -> VMConfig:
    """Hard-link the kernel and initramfs ``config`` boots into ``folder``; the config using them.

    A VM that owns its boot files does not depend on the image it came from.
    """
    if config.boot is None:
        return config
    updates: dict[str, str | None] = {}
    for key in ("kernel", "initrd"):
        current = getattr(config.boot, key)
        if current is None:
            continue
        target = folder / Path(current).name
        if not target.exists():
            _link_or_copy(Path(current), target)
        updates[key] = str(target)
    return config.model_copy(update={"boot": config.boot.model_copy(update=updates)})


def _full_copy(
    runner: CommandRunner, image_dir: Path, image: ImageManifest, target: Path, size: int
) -> None:
    """An independent copy of the image's disk, grown to ``size``, plus its boot files."""
    img.convert(runner, image_dir / image.disk, "qcow2", target, "qcow2")
    img.resize(runner, target, "qcow2", size)
    for member in (image.kernel, image.initrd):
        if member is not None:
            _link_or_copy(image_dir / member, target.parent / member)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
