"""VM lifecycle use cases: create, start, stop, pause, resume, restart, delete.

The database holds intent and the last recorded state; a running QEMU holds
the truth (asked over QMP). Each VM has one lock: actions on one VM run one at
a time; actions on different VMs run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from hangar.errors import (
    Conflict,
    HangarError,
    InvalidInput,
    NextStep,
    NotFound,
    QemuFailed,
    ResourceLimit,
    StateConflict,
)
from hangar.names import check_name
from hangar.node.base import Node, Outcome, ReadyHook, Running, SavedGuest, SerialPosition
from hangar.node.local import LocalNode
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services import guest_files, ports
from hangar.services.lifecycle import Action, PowerState, check
from hangar.services.networks import NetworkService, NicAddress
from hangar.services.storage.images import ImageStore
from hangar.services.undo import revert_on_error
from hangar.spec.host import HostFacts
from hangar.spec.network import tap_name
from hangar.spec.resolve import mac_from_id, resolve
from hangar.spec.vm import NicConfig, PortForward, VMConfig, VMCreate
from hangar.state.locks import LocalLocks, Locks, ProjectKey
from hangar.state.vms import DEFAULT_PROJECT, VMRecord, VMRepository

if TYPE_CHECKING:  # the local-only accessors' types (see LocalNode)
    from hangar.services.qemu.argv import VMFiles
    from hangar.services.qga.agent import GuestAgent
    from hangar.services.supervisor import Supervisor

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
    # Addresses on hangar's virtual networks (user-mode NICs have none to show).
    addresses: list[NicAddress] = []
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


# Admits a resolved config into its project (services/quota.py) or raises (e.g.
# QuotaExceeded); returns the release to run if the launch fails.
QuotaCheck = Callable[[str, VMConfig], Awaitable[Callable[[], Awaitable[None]]]]


class VMService:
    def __init__(
        self,
        paths: Paths,
        repo: VMRepository,
        images: ImageStore,
        host: HostFacts,
        runner: CommandRunner,
        quota_check: QuotaCheck | None = None,
        networks: NetworkService | None = None,
        sandbox: bool = False,
        node: Node | None = None,
    ):
        self.paths = paths
        # Where the VMs run: this host's QEMUs unless told otherwise (tests pass a fake).
        # Sandboxed: every QEMU as the VM's own unprivileged uid in a namespace of its
        # own (services/qemu/jail.py); hangard turns it on, tests whose QEMU is a fake
        # script from the virtualenv leave it off.
        self.node = node or LocalNode(paths, host, runner, sandbox=sandbox)
        self.node.on_exit(self._on_exit)
        self.quota_check = quota_check
        self.networks = networks
        self.repo = repo
        self.images = images
        self.host = host
        self.runner = runner
        self._locks: Locks = LocalLocks()
        self._background: set[asyncio.Task[None]] = set()

    # --- reading -----------------------------------------------------------------

    @property
    def local(self) -> LocalNode:
        """This host's Node, for the services not yet behind Node methods (snapshots,
        warm templates, clones, volumes, exports, guests: they reach QEMU directly)."""
        if not isinstance(self.node, LocalNode):
            raise QemuFailed("this operation runs only on this host's own QEMUs")
        return self.node

    @property
    def supervisor(self) -> Supervisor:
        return self.local.supervisor

    def files(self, config: VMConfig) -> VMFiles:
        return self.local.files(config)

    async def state_of(self, record: VMRecord) -> PowerState:
        state = await self.node.power_state(record.id)
        return state if state is not None else PowerState(record.state)

    async def view(self, record: VMRecord) -> VMView:
        config = record.config
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
            pid=self.node.pid(record.id),
            forwards=[f for nic in config.nics for f in nic.forwards],
            macs=[nic.mac for nic in config.nics],
            addresses=self.networks.addresses(config, record.project) if self.networks else [],
            boot_marker=config.boot_marker,
            created_at=record.created_at,
            serial_log=str(self.node.serial_log(config)),
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

    async def open_console(
        self, name: str, project: str = DEFAULT_PROJECT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the serial console of a running or paused VM. Raises
        :class:`OSError` when QEMU's console does not answer."""
        record = self.repo.get(name, project)
        state = await self.state_of(record)
        if state not in (PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING):
            raise StateConflict(
                name, "attach to the console of", state.value, ["running", "paused"]
            )
        return await self.node.open_console(record.id)

    async def serial_output(
        self,
        name: str,
        project: str = DEFAULT_PROJECT,
        *,
        lines: int,
        follow: bool,
        ended: asyncio.Event | None = None,
    ) -> AsyncIterator[bytes]:
        """The last ``lines`` lines of the VM's serial output, then (``follow``) what it
        gains until the VM is deleted or ``ended`` is set. The serial port's CRLF
        becomes LF, also when a read ends between the two."""
        config = self.repo.get(name, project).config
        start = await self.node.serial_tail(config, lines)
        return _serial_stream(self.node, config, start, follow, ended)

    # --- create and delete --------------------------------------------------------

    @property
    def locks(self) -> Locks:
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

    # --- NICs -----------------------------------------------------------------------

    async def attach_nic(
        self, name: str, network: str, ip: str | None = None, *, project: str = DEFAULT_PROJECT
    ) -> VMView:
        """Add a NIC on ``network`` (of the VM's project): to a stopped VM (there from its
        next start), or hotplugged into a running ``q35`` VM.

        Running ``microvm`` VMs are refused: virtio-mmio devices cannot be hot-plugged.
        """
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            live = await self._nic_live(record, "attach a NIC to")
            config = record.config
            # The first index whose MAC and tap no NIC has (a detach leaves gaps).
            taken = {n.mac for n in config.nics} | {n.tap for n in config.nics}
            index = next(
                i
                for i in range(len(config.nics) + 1)
                if mac_from_id(config.id, i) not in taken and tap_name(config.id, i) not in taken
            )
            nics, slot = self._pinned_nics(config)
            nic = NicConfig(
                type="network",
                mac=mac_from_id(config.id, index),
                forwards=(),
                network=network,
                ip=ip,
                tap=tap_name(config.id, index),
                slot=slot,
            )
            # Under the project lock: addresses are allocated from the project's networks.
            async with self._locks[ProjectKey(project)]:
                updated = self._prepare_networks(
                    config.model_copy(update={"nics": (*nics, nic)}), project
                )
                self.repo.set_config(updated)
            try:
                if self.networks is not None:
                    await self.networks.attach_vm(updated, project)
                if live:
                    await self.node.plug_nic(record.id, updated, len(updated.nics) - 1)
            except BaseException:
                self.repo.set_config(config)
                if self.networks is not None:
                    await self.networks.detach_nics(config, [nic], project)
                raise
        return await self.get(name, project)

    def _pinned_nics(self, config: VMConfig) -> tuple[tuple[NicConfig, ...], int | None]:
        nics, free = self.node.pin_nics(config)
        if free is None and self.node.capabilities(config).hotplug:
            raise ResourceLimit(
                f"VM '{config.name}' has {len(nics)} NICs, the most a q35 VM takes",
                hint="detach one first",
            )
        return nics, free

    async def detach_nic(
        self, name: str, network: str, *, project: str = DEFAULT_PROJECT
    ) -> VMView:
        """Remove a VM's NIC on ``network`` (its tap, lease reservation, name): from a
        stopped VM, or unplugged from a running ``q35`` VM (the guest lets go first)."""
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            live = await self._nic_live(record, "detach a NIC from")
            config = record.config
            gone = [n for n in config.nics if n.type == "network" and n.network == network]
            if not gone:
                raise NotFound(
                    f"VM '{name}' has no NIC on network '{network}'",
                    hint="the VM's details show its NICs and addresses",
                    details={"vm": name},
                    action=NextStep.SHOW_VM,
                )
            if live:
                for nic in gone:
                    await self.node.unplug_nic(record.id, config, config.nics.index(nic), nic)
            pinned, _ = self._pinned_nics(config)
            kept = tuple(p for p, n in zip(pinned, config.nics, strict=True) if n not in gone)
            if self.networks is not None:
                await self.networks.detach_nics(config, gone, project)
            self.repo.set_config(config.model_copy(update={"nics": kept}))
        return await self.get(name, project)

    async def _nic_live(self, record: VMRecord, action: str) -> bool:
        """False for a stopped VM; True for a running VM that takes hotplug; refused
        otherwise."""
        state = await self.state_of(record)
        if state in (PowerState.STOPPED, PowerState.CRASHED):
            return False
        hotplug = self.node.capabilities(record.config).hotplug
        live = state in (PowerState.RUNNING, PowerState.PAUSED) and self.node.is_running(record.id)
        if live and hotplug:
            return True
        error = StateConflict(record.name, action, state.value, ["stopped", "crashed"])
        if hotplug:
            error.hint = "wait until it is running or stopped"
            error.action = NextStep.SHOW_VM
        else:
            error.hint = (
                f"the {record.config.machine} machine has no NIC hotplug (virtio-mmio devices "
                "cannot be added to a running guest): stop the VM, change the NICs, then "
                "start it again; VMs on the q35 machine take NICs while they run"
            )
            error.action = NextStep.STOP_VM
        raise error

    # --- power ----------------------------------------------------------------------

    async def start(self, name: str, project: str = DEFAULT_PROJECT) -> VMView:
        record = self.repo.get(name, project)
        async with self._locks[record.id]:
            check(name, Action.START, await self.state_of(record))
            self._check_ports(record.config)
            await self._start(record)
        return await self.get(name, project)

    async def _start(
        self,
        record: VMRecord,
        *,
        memory: SavedGuest | None = None,
        ready: ReadyHook | None = None,
    ) -> Running:
        """Start QEMU paused, wire it up over QMP, then continue it.

        With ``memory`` (saved from this config's machine) QEMU resumes the saved
        guest instead of booting. ``ready`` runs once it runs.
        """
        if memory is None and any(nic.dhcp_start for nic in record.config.nics):
            record = self._fresh_lease_table(record)
        config = record.config
        if self.networks is not None:
            # Taps, reservations and rules again: idempotent, and it repairs a
            # host that lost them (e.g. after a reboot).
            await self.networks.attach_vm(config, record.project)
        self.repo.set_state(record.id, PowerState.STARTING)
        try:
            running = await self.node.start(config, memory=memory, ready=ready)
        except BaseException:
            self.repo.set_state(record.id, record.state, record.state_reason)
            raise
        self.repo.set_state(record.id, PowerState.RUNNING)
        return running

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

    def _fresh_lease_table(self, record: VMRecord) -> VMRecord:
        """A booting VM's user-mode network starts with an empty DHCP lease table, whose
        base is the guest's own address again (NicConfig.dhcp_start)."""
        nics = tuple(nic.model_copy(update={"dhcp_start": None}) for nic in record.config.nics)
        config = record.config.model_copy(update={"nics": nics})
        self.repo.set_config(config)
        return dataclasses.replace(record, config=config)

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

    def _detach_iso(self, config: VMConfig) -> None:
        self.repo.set_config(config.model_copy(update={"iso": None}))
        self.node.remove_iso(config)

    def agent(self, config: VMConfig) -> GuestAgent:
        """The guest agent client of a VM (one per VM: its channel serves one client)."""
        return self.local.agent(config)

    def _prepare_networks(self, config: VMConfig, project: str) -> VMConfig:
        if self.networks is not None:
            return self.networks.prepare_vm(config, project)
        if any(nic.type == "network" for nic in config.nics):
            raise InvalidInput("this hangard has no network service", hint="use a user-mode NIC")
        return config

    def check_ports(self, config: VMConfig) -> None:
        """Raise :class:`Conflict` if a host port ``config`` forwards is taken."""
        self._check_ports(config)

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

    async def reconcile(self) -> None:
        """Adopt QEMUs that kept running while hangard was away; record the ones that vanished."""
        for record in self.repo.list():
            found = await self.node.adopt(record.config)
            if isinstance(found, PowerState):
                self.repo.set_state(record.id, found, "adopted after hangard restarted")
            elif found is not None and record.state not in (
                PowerState.STOPPED,
                PowerState.CRASHED,
            ):
                state = PowerState.STOPPED if found.clean else PowerState.CRASHED
                self.repo.set_state(record.id, state, found.reason)

    async def shutdown(self) -> None:
        """hangard is stopping: let go of every QEMU, leaving the VMs running."""
        for task in list(self._background):
            task.cancel()
        await self.node.detach_all()


SERIAL_POLL = 0.05


async def _serial_stream(
    node: Node,
    config: VMConfig,
    start: tuple[bytes, SerialPosition] | None,
    follow: bool,
    ended: asyncio.Event | None,
) -> AsyncIterator[bytes]:
    if start is None:
        return
    held = b""

    def lf(chunk: bytes) -> bytes:
        nonlocal held
        chunk = held + chunk
        held = b"\r" if chunk.endswith(b"\r") else b""
        return chunk[: len(chunk) - len(held)].replace(b"\r\n", b"\n")

    first, position = start
    if first:
        yield lf(first)
    while follow and (ended is None or not ended.is_set()):
        more = await node.serial_from(config, position)
        if more is None:
            break  # the VM was deleted
        chunk, position = more
        if chunk:
            yield lf(chunk)
        else:
            await asyncio.sleep(SERIAL_POLL)
    if held:
        yield held
