"""Warm templates and forks: VMs that resume a saved running guest instead of booting.

``publish --warm`` saves a running VM's disk (a point-in-time copy by QEMU's backup
job) and its RAM and devices (a migration stream) as a template, paused only for
that moment. A launch from it starts QEMU from the saved config with ``-incoming``
on a new overlay of the template's disk, then makes the guest a distinct machine:
hangard has the guest take it (see identity.py: the tiny image's serial-console
hook, or qemu-guest-agent in cloud images, which also get a new NoCloud seed) and
waits for its answer. ``fork`` is a warm publish followed by N warm launches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from hangar.errors import Conflict, HangarError, InvalidInput, NextStep, StateConflict
from hangar.names import check_name
from hangar.node.base import Running
from hangar.node.files import link_boot_files
from hangar.runner import CommandRunner
from hangar.services import guest_files
from hangar.services.lifecycle import PowerState
from hangar.services.progress import Reporter, quiet, span
from hangar.services.qemu import img
from hangar.services.qga.agent import GuestAgent
from hangar.services.qmp import migration
from hangar.services.qmp.backup import backup
from hangar.services.qmp.migration import SavedGuest
from hangar.services.storage.images import MANIFEST, ImageStore
from hangar.services.supervisor import Runtime
from hangar.services.templates import identity, ram
from hangar.services.templates import settle as settling
from hangar.services.templates.manifest import template_manifest, without_secrets
from hangar.services.templates.standby import StandbyPool, launched_seed
from hangar.services.undo import revert_on_error
from hangar.services.vms import VMService, VMView
from hangar.spec.image import ImageManifest, WarmState
from hangar.spec.resolve import mac_from_id
from hangar.spec.vm import NicConfig, VMConfig, VMCreate
from hangar.state.projects import ProjectRepository
from hangar.state.vms import DEFAULT_PROJECT

log = logging.getLogger(__name__)

MEMORY = "memory.bin"
DISK = "disk.qcow2"
MAX_FORKS = 100


# QEMU user-mode networking: each VM has its own 10.0.2.0/24; slirp leases from
# dhcpstart (default .15) up, 16 leases (libslirp NB_BOOTP_CLIENTS), and its lease
# table travels in the saved guest. Warm VMs get distinct addresses from this range.
SUBNET = "10.0.2."
SLIRP_FIRST = 15
LEASES = 16
WARM_FIRST, WARM_LAST = 20, 239


def plan_address(saved: NicConfig, taken: set[str]) -> tuple[str, str]:
    """(address, dhcp_start) for a new MAC resumed on the lease table saved with ``saved``.

    The saved table starts at its base and holds one lease per MAC the saved guest
    had, up to its own address; the new MAC gets the first free slot. So the new
    VM's dhcpstart is its chosen address minus those leases. Pure.
    """
    own = _octet(saved.address, SLIRP_FIRST)
    base = _octet(saved.dhcp_start or saved.address, SLIRP_FIRST)
    held = own - base + 1
    if not 1 <= held < LEASES:
        raise InvalidInput(
            f"the saved guest's lease table is full ({held} leases)",
            hint="publish the template again from a VM that booted",
        )
    for octet in range(max(WARM_FIRST, held + 4), WARM_LAST + 1):
        address = f"{SUBNET}{octet}"
        if address not in taken:
            return address, f"{SUBNET}{octet - held}"
    raise InvalidInput("no free guest address left for warm VMs", hint="delete some warm VMs")


def _octet(address: str | None, default: int) -> int:
    if address is None:
        return default
    if not address.startswith(SUBNET):
        raise InvalidInput(f"guest address {address} is outside {SUBNET}0/24")
    return int(address.removeprefix(SUBNET))


class ForkResult(BaseModel):
    template: str  # the warm template the forks are linked clones of
    vms: list[VMView]


class WarmService:
    def __init__(
        self,
        vms: VMService,
        store: ImageStore,
        runner: CommandRunner,
        projects: ProjectRepository | None = None,
    ):
        self.vms = vms
        self.store = store
        self.runner = runner
        self.standby = StandbyPool(self, projects)
        # Guest addresses of warm launches in progress (not in the database yet).
        self._reserved: set[str] = set()
        self.host_keys = identity.HostKeyMaker()
        if any(m.warm is not None and m.agent for m in store.list()):
            self.host_keys.fill()

    def warm_state(self, image: str, project: str | None = None) -> WarmState | None:
        return self.store.get(image, project).warm

    # --- publish ------------------------------------------------------------------------

    async def publish(
        self,
        vm_name: str,
        template: str,
        *,
        project: str = DEFAULT_PROJECT,
        progress: Reporter = quiet,
        settle: bool = True,
        owner: str | None = None,
    ) -> ImageManifest:
        """Save running VM ``vm_name`` (disk, RAM, devices) as warm template ``template``.
        The VM keeps running; it is paused while its state is saved. ``settle``: first
        wait for the guest to go quiet (see :mod:`settle`), so launches do not redo
        what it was busy with. ``owner``: the one project that may list and launch it
        (None: every project)."""
        check_name(template, what="template name")
        record = self.vms.repo.get(vm_name, project)
        if self.store.path(template).exists():
            raise Conflict(
                f"an image or template named '{template}' already exists",
                hint="pick another name, or delete that image first",
                details={"image": template},
                action=NextStep.DELETE_IMAGE,
            )
        async with self.vms.locks[record.id]:
            record = self.vms.repo.get(vm_name, project)
            state = await self.vms.state_of(record)
            runtime = self.vms.supervisor.get(record.id)
            if state is not PowerState.RUNNING or runtime is None:
                raise StateConflict(vm_name, "publish warm", state.value, ["running"])
            if record.config.data_disks:
                raise Conflict(
                    f"VM '{vm_name}' has volumes attached; a warm template holds the root "
                    "disk only",
                    hint="detach the volumes first",
                )
            if record.config.boot is None:
                raise Conflict(
                    f"VM '{vm_name}' boots from its disk through firmware; a warm template "
                    "needs a VM that boots the image's kernel directly",
                    hint="publish it cold (not warm), or launch from the image with direct "
                    "kernel boot (no firmware)",
                )
            return await self._publish(record.config, runtime, template, progress, settle, owner)

    async def _publish(
        self,
        config: VMConfig,
        runtime: Runtime,
        template: str,
        progress: Reporter,
        settle: bool,
        owner: str | None,
    ) -> ImageManifest:
        self.store.root.mkdir(parents=True, exist_ok=True)
        tmp = self.store.root / f".publish-{template}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        monitor = runtime.monitor
        agent = self.vms.agent(config) if config.agent else None
        listener = None
        mac_client_id = False
        held: identity.IdentityPort | None = None
        try:
            try:
                if agent is not None:
                    mac_client_id = await self._mac_client_id(config, agent, on=True)
                    listener = await self._start_listener(config, agent)
                if listener is not None and config.identity_channel:
                    # Saved with hangard connected: see identity.IdentityPort.
                    held = await identity.IdentityPort.connect(
                        self.vms.files(config).identity_socket
                    )
                if settle:
                    await self._settle(config, runtime, progress)
                progress("pausing the VM", percent=2)
                await monitor.stop()
                try:
                    await asyncio.to_thread(
                        img.create, self.runner, tmp / DISK, "qcow2", config.disk_size
                    )
                    await backup(
                        monitor, tmp / DISK, sync="full", progress=span(progress, "disk", 2, 50)
                    )
                    await migration.save_memory(
                        monitor, tmp / MEMORY, span(progress, "memory and devices", 50, 97)
                    )
                finally:
                    await monitor.cont()  # also takes the disks back after the migration
            finally:
                if agent is not None and listener is not None:
                    await self._stop_listener(config, agent, listener, held)
                if held is not None:
                    held.close()
                if agent is not None and mac_client_id:
                    await self._mac_client_id(config, agent, on=False)
            progress("turning the saved memory into a RAM file", percent=97)
            files = self.vms.files(config)
            await ram.split_stream(
                config,
                self.vms.host,
                self.runner,
                stream=tmp / MEMORY,
                disk=tmp / DISK,
                seed=files.seed if config.cloud_init is not None else None,
                folder=tmp,
                runtime=files.runtime.with_name(f"w-{uuid.uuid4().hex[:10]}"),
                sandbox=self.vms.paths.vms if self.vms.local.sandbox else None,
            )
            (tmp / MEMORY).unlink()
            # The boot files go with the template, under their own names.
            link_boot_files(config, tmp)
            assert config.boot is not None  # checked by publish()
            manifest = template_manifest(
                config,
                template,
                made_at=datetime.now(UTC),
                disk=DISK,
                description=f"warm template from running VM {config.name} "
                f"(image {config.image}): launches resume it",
                warm=WarmState(
                    memory=ram.STATE, ram=ram.RAM, listener=listener, config=without_secrets(config)
                ),
                project=owner,
            )
            (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            tmp.rename(self.store.path(template))
            if config.agent:
                self.host_keys.fill()  # for the launches to come
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest

    @staticmethod
    async def _settle(config: VMConfig, runtime: Runtime, progress: Reporter) -> None:
        progress("waiting for the guest to settle", percent=1)
        pid = runtime.pid
        if not await settling.wait_quiet(lambda: settling.qemu_cpu_seconds(pid), config.cpus):
            log.warning(
                "VM %s: still busy after %g s; saved as it is",
                config.name,
                settling.QUIET_TIMEOUT,
            )

    @staticmethod
    async def _mac_client_id(config: VMConfig, agent: GuestAgent, *, on: bool) -> bool:
        """See :func:`identity.mac_client_id`; True if it was done. Without it the
        template still works, its VMs sharing the source's DHCP client id."""
        try:
            await identity.mac_client_id(agent, on=on)
        except HangarError as exc:
            log.warning("VM %s: DHCP client id left as it is (%s)", config.name, exc.message)
            return False
        return True

    @staticmethod
    async def _start_listener(config: VMConfig, agent: GuestAgent) -> int | None:
        """The identity script, waiting in the guest, is saved with it: a launch then
        only hands it its input. A guest where it cannot start still makes a template."""
        try:
            return await identity.start_listener(agent, port=config.identity_channel)
        except HangarError as exc:
            log.warning("VM %s: no waiting identity script (%s)", config.name, exc.message)
            return None

    @staticmethod
    async def _stop_listener(
        config: VMConfig, agent: GuestAgent, pid: int, port: identity.IdentityPort | None
    ) -> None:
        try:
            await identity.stop_listener(agent, pid, port)
        except HangarError as exc:
            log.warning("VM %s: the identity script still waits (%s)", config.name, exc.message)

    # --- launch -------------------------------------------------------------------------

    def check_request(self, request: VMCreate, warm: WarmState) -> None:
        """A saved guest resumes with the hardware it was saved with: refuse other asks."""
        saved = warm.config
        asked = {
            "cpus": (request.cpus, saved.cpus),
            "memory": (request.memory, saved.memory),
            "machine": (request.machine, saved.machine),
            "nics": (len(request.nics) if request.nics is not None else None, len(saved.nics)),
        }
        for what, (want, have) in asked.items():
            if want is not None and want != have:
                raise InvalidInput(
                    f"template '{request.image}' is warm: it resumes a guest saved with "
                    f"{what}={have}, not {want}",
                    hint="leave it out, or launch it cold to boot instead",
                )
        if request.disk is not None and request.disk < saved.disk_size:
            raise InvalidInput(
                f"the disk of template '{request.image}' is {saved.disk_size} bytes",
                hint="ask for that size or more",
            )

    async def launch(self, request: VMCreate, *, project: str = DEFAULT_PROJECT) -> VMView:
        """Create VM ``request.name`` from a warm template: resume its saved guest, then
        give it a new identity. Nothing is left behind if any step fails."""
        check_name(request.name)
        if request.image is None:
            raise InvalidInput("a warm launch needs a template", hint="name the template")
        image = self.store.get(request.image, project)
        warm = image.warm
        if warm is None:
            raise InvalidInput(f"template '{image.name}' is not warm")
        self.check_request(request, warm)
        async with self.vms.locks[f"name:{project}/{request.name}"]:
            if self.vms.repo.find(request.name, project) is not None:
                raise Conflict(
                    f"a VM named '{request.name}' already exists in project '{project}'",
                    hint="pick another name, or delete the existing VM first",
                )
            claimed = await self.standby.claim(image, request, project)
            if claimed is not None:
                return claimed
            view, _ = await self.resume(request, image, warm, project)
            return view

    async def resume(
        self,
        request: VMCreate,
        image: ImageManifest,
        warm: WarmState,
        project: str,
        *,
        standby: bool = False,
    ) -> tuple[VMView, identity.IdentityPort | None]:
        """Resume ``image``'s saved guest as new VM ``request.name`` (checked free) and
        give it its identity. ``standby``: its identity script then waits for a final
        name (identity.rename), over the identity port returned (None: the template's
        guest has no such script; it cannot be a standby)."""
        vm_id = uuid.uuid4().hex
        folder = self.store.path(image.name)
        config = self._config(request, warm, image, folder, vm_id, self._addresses())
        if config.cloud_init is not None:
            config = guest_files.with_ssh_forward(config, self.vms.port_owners(config))
        files = self.vms.files(config)
        reserved = {nic.address for nic in config.nics if nic.address}
        self._reserved |= reserved
        async with revert_on_error() as undo:
            undo.push("release addresses", lambda: self._reserved.difference_update(reserved))
            files.dir.mkdir(parents=True)
            undo.push("remove VM folder", lambda: shutil.rmtree(files.dir, True))
            await asyncio.to_thread(
                img.create_overlay, self.runner, folder / image.disk, files.disk,
                config.disk_size,
            )  # fmt: skip

            await asyncio.to_thread(guest_files.prepare, config, files, self.vms.host, None)
            saved_mac = warm.config.nics[0].mac if warm.config.nics else ""

            # Made on the host while the guest resumes (see identity.HostKeyMaker).
            host_keys = (
                asyncio.ensure_future(asyncio.to_thread(self.host_keys.make, config.name))
                if config.agent
                else None
            )

            # Connected before the guest runs, as when it was saved (IdentityPort).
            ports: list[identity.IdentityPort] = []

            async def loaded() -> None:
                if config.identity_channel and warm.listener is not None and config.nics:
                    ports.append(await identity.IdentityPort.connect(files.identity_socket))

            async def ready(runtime: Running) -> None:
                t0 = time.monotonic()
                mac = config.nics[0].mac
                if host_keys is not None:
                    agent = self.vms.agent(config)
                    keys = await host_keys
                    await identity.by_agent(
                        agent,
                        config.name,
                        saved_mac,
                        mac,
                        vm_id,
                        keys,
                        listener=warm.listener,
                        port=ports[0] if ports else None,
                        again=standby,
                    )
                else:
                    await identity.by_console(files, config.name, mac, vm_id)
                log.info(
                    "VM %s: resumed %.3f s after QEMU started; new identity in %.3f s",
                    config.name,
                    t0 - runtime.started,
                    time.monotonic() - t0,
                )

            try:
                view = await self.vms.adopt_copy(
                    config,
                    start=True,
                    project=project,
                    memory=SavedGuest(
                        folder / warm.memory,
                        ram=folder / warm.ram if warm.ram else None,
                        loaded=loaded,
                    ),
                    ready=ready if config.nics else None,
                )
            except BaseException:
                for port in ports:
                    port.close()
                raise
        self._reserved -= reserved  # in the database now
        held = ports[0] if ports else None
        if held is not None and not standby:
            held.close()
            held = None
        return view, held

    def _addresses(self) -> set[str]:
        taken = set(self._reserved)
        for record in self.vms.repo.list():
            taken |= {nic.address for nic in record.config.nics if nic.address}
        return taken

    @staticmethod
    def _config(
        request: VMCreate,
        warm: WarmState,
        image: ImageManifest,
        folder: Path,
        vm_id: str,
        taken: set[str],
    ) -> VMConfig:
        saved = warm.config
        nics = []
        for i, nic in enumerate(saved.nics):
            address, dhcp_start = plan_address(nic, taken)
            taken = taken | {address}
            nics.append(
                NicConfig(
                    type=nic.type,
                    mac=mac_from_id(vm_id, i),
                    forwards=request.nics[i].forwards if request.nics else (),
                    address=address,
                    dhcp_start=dhcp_start,
                )
            )
        assert saved.boot is not None  # warm templates are only made of kernel-booted VMs
        boot = saved.boot.model_copy(
            update={
                "kernel": str(folder / (image.kernel or "")),
                "initrd": str(folder / image.initrd) if image.initrd else None,
            }
        )
        cloud_init = launched_seed(saved.cloud_init, request)  # its own seed
        return saved.model_copy(
            update={
                "id": vm_id,
                "name": request.name,
                "cloud_init": cloud_init,
                "image": image.name,
                "nics": tuple(nics),
                "boot": boot,
                "data_disks": (),
                "disk_size": request.disk or saved.disk_size,
            }
        )

    # --- fork ---------------------------------------------------------------------------

    async def fork(
        self,
        vm_name: str,
        count: int,
        *,
        prefix: str | None = None,
        project: str = DEFAULT_PROJECT,
        progress: Reporter = quiet,
    ) -> ForkResult:
        """N running copies of running VM ``vm_name``, each a distinct machine: a warm
        template of it (kept: the forks are linked clones of its disk), then N warm
        launches named PREFIX-1 … PREFIX-N (PREFIX: VM-fork)."""
        if not 1 <= count <= MAX_FORKS:
            raise InvalidInput(f"fork count {count}", hint=f"fork 1 to {MAX_FORKS} VMs at a time")
        record = self.vms.repo.get(vm_name, project)
        base = prefix or f"{vm_name}-fork"
        names = [f"{base}-{i}" for i in range(1, count + 1)]
        for name in names:
            check_name(name)
            if self.vms.repo.find(name, project) is not None:
                raise Conflict(
                    f"a VM named '{name}' already exists in project '{project}'",
                    hint="pick another name prefix, or delete that VM first",
                )
        template = f"fork-{vm_name[:40]}-{uuid.uuid4().hex[:8]}"
        # The state of now, busy or not: that is what a fork copies.
        # The template holds this project's guest (its files, its shell history): it
        # belongs to this project alone.
        await self.publish(
            record.name, template, project=project, progress=progress, settle=False, owner=project
        )
        made: list[VMView] = []
        try:
            for i, name in enumerate(names):
                progress(f"launching {name}", percent=97 + 3 * i / count)
                made.append(await self.launch(VMCreate(name=name, image=template), project=project))
        except BaseException:
            for vm in made:
                with contextlib.suppress(HangarError):
                    await self.vms.delete(vm.name, force=True, project=project)
            shutil.rmtree(self.store.path(template), ignore_errors=True)
            raise
        return ForkResult(template=template, vms=made)
