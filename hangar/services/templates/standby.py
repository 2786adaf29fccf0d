"""Standby VMs: launches from a warm template claim a guest that already runs.

A warm launch resumes the saved guest in a new QEMU whose TCG translation cache is
empty: under TCG most of its ~1.3 s to sshd's banner is the guest's one vCPU
translating, for the first time in that process, the code that the identity script,
networkd and sshd run. A template with ``standby N`` has hangard keep N VMs resumed
from it ahead of time, in its own project (:data:`PROJECT`). Each already has an
identity of its own (MAC, DHCP lease, machine-id, SSH host keys, clock: a whole warm
launch) and has run sshd's connection path once; its identity script waits again on
the identity port. A launch that fits claims one: the VM moves to the caller's
project under the caller's name, the guest takes that hostname over the port, and a
new standby is made in the background.

A claim changes the name and adds the launch's port forwards (HMP hostfwd_add), so
it serves launches that ask for nothing else: the template's disk size, no forward
to sshd (a standby VM has its own), user-mode NICs (a managed network would need
the VM attached in the caller's project). Others, and launches that find no
standby ready, resume the template as usual. Standby VMs are deleted
when hangard stops and made again when it starts: they hold nothing of anyone's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel

from hangar.errors import HangarError, InvalidInput, NotFound, QemuFailed
from hangar.services import ports
from hangar.services.guest_files import SSH_PORT
from hangar.services.lifecycle import PowerState
from hangar.services.qemu.argv import nic_device
from hangar.services.qmp import hmp
from hangar.services.storage.seed import render_seed, write_seed_iso
from hangar.services.templates import identity
from hangar.spec.image import MAX_STANDBY, ImageManifest, WarmState
from hangar.spec.vm import CloudInit, PortForward, VMConfig, VMCreate
from hangar.state.locks import ProjectKey
from hangar.state.projects import ProjectRepository

if TYPE_CHECKING:
    from hangar.services.qga.agent import GuestAgent
    from hangar.services.templates.warm import WarmService
    from hangar.services.vms import VMService, VMView

log = logging.getLogger(__name__)

# hangard's project for standby VMs: not a name a user can give a project.
PROJECT = "_standby"
# A template whose standby VMs keep failing to start is left without for a while.
RETRIES = 3
RETRY_DELAY = 5.0
WARMUP_TIMEOUT = 30.0
REFILL_DELAY = 5.0
# Run in the guest through its agent (see warm_up_sshd); a file shipped with hangar.
WARMUP_SCRIPT = (Path(__file__).parent / "warmup_sshd.sh").read_text()


class StandbyView(BaseModel):
    template: str
    count: int  # how many the template asks for
    ready: list[str]  # the standby VMs (project _standby) waiting for a launch


@dataclass
class Standby:
    vm_id: str
    name: str
    mac: str
    port: identity.IdentityPort  # held connected: the script waits on it
    # A claim was interrupted after it wrote to the port: the next answer there
    # would be that claim's, so it cannot be claimed again.
    spoiled: bool = False


def unfit_source(config: VMConfig) -> str | None:
    """Why warm templates of a VM with ``config`` cannot have standby VMs, or None. Pure."""
    if not config.agent or not config.identity_channel:
        return (
            "its guest has no identity script waiting on hangar's identity port "
            "(an image with qemu-guest-agent and perl, such as debian-12, launched "
            "by this version)"
        )
    if not config.nics or any(nic.type != "user" for nic in config.nics):
        return "standby VMs serve VMs with user-mode NICs only, not managed networks"
    return None


def can_stand_by(warm: WarmState) -> str | None:
    """Why ``warm``'s launches cannot be served by standby VMs, or None. Pure."""
    why = unfit_source(warm.config)
    if why is None and warm.listener is None:
        return "its identity script did not start in the guest when it was saved"
    return why


def fits(request: VMCreate, warm: WarmState) -> bool:
    """Whether a claimed standby VM is what ``request`` asks for: a name, cloud-init
    settings (which only its seed holds) and port forwards (added to the running
    VM), but not one to sshd, which a standby VM forwards already. Pure."""
    if request.nics is not None and any(
        f.guest_port == SSH_PORT for nic in request.nics for f in nic.forwards
    ):
        return False
    return request.disk is None or request.disk == warm.config.disk_size


class StandbyPool:
    def __init__(self, warm: WarmService, projects: ProjectRepository | None = None):
        self.warm = warm
        self.projects = projects
        self._ready: defaultdict[str, list[Standby]] = defaultdict(list)
        self._fillers: dict[str, asyncio.Task[None]] = {}
        self._started = False

    @property
    def vms(self) -> VMService:
        return self.warm.vms

    def view(self, template: str) -> StandbyView:
        manifest = self.warm.store.get(template)
        count = manifest.warm.standby if manifest.warm is not None else 0
        ready = [entry.name for entry in self._ready.get(template, [])]
        return StandbyView(template=template, count=count, ready=ready)

    # --- settings -----------------------------------------------------------------------

    def set_count(self, template: str, count: int) -> StandbyView:
        """Keep ``count`` standby VMs of warm template ``template`` (0: none)."""
        if not 0 <= count <= MAX_STANDBY:
            raise InvalidInput(f"standby count {count}", hint=f"use 0 to {MAX_STANDBY}")
        manifest = self.warm.store.get(template)
        if manifest.warm is None:
            raise InvalidInput(
                f"template '{template}' is not warm: there is no running guest to keep ready",
                hint="publish a running VM as a warm template",
            )
        why = can_stand_by(manifest.warm)
        if count and why is not None:
            raise InvalidInput(
                f"template '{template}' cannot have standby VMs: {why}",
                hint="its warm launches resume it as they do now",
            )
        manifest = manifest.model_copy(
            update={"warm": manifest.warm.model_copy(update={"standby": count})}
        )
        self.warm.store.write(manifest)
        if self._started:
            self.refill(template)
        return self.view(template)

    # --- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        """hangard starts: remove standby VMs it left (their guests wait for a
        connection that is gone), then make those the templates ask for."""
        for record in self.vms.repo.list(PROJECT):
            await self._delete(record.name)
        self._started = True
        for manifest in self.warm.store.list():
            if manifest.warm is not None and manifest.warm.standby:
                self.refill(manifest.name)

    async def stop(self) -> None:
        """hangard stops: the standby VMs go (see :meth:`start`)."""
        self._started = False
        for template in list(self._ready) + list(self._fillers):
            await self.drain(template)

    async def drain(self, template: str) -> None:
        """Delete ``template``'s standby VMs (before the template is deleted)."""
        filler = self._fillers.pop(template, None)
        if filler is not None:
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await filler
        for entry in self._ready.pop(template, []):
            await self._discard(entry)

    def refill(self, template: str, *, delay: float = 0.0) -> None:
        """Make standby VMs of ``template`` in the background, up to its count, after
        ``delay`` seconds."""
        if not self._started:
            return
        filler = self._fillers.get(template)
        if filler is None or filler.done():
            self._fillers[template] = asyncio.create_task(
                self._fill(template, delay), name=f"standby-{template}"
            )

    async def _fill(self, template: str, delay: float) -> None:
        await asyncio.sleep(delay)
        failures = 0
        while True:
            try:
                manifest = self.warm.store.get(template)
            except NotFound:
                return
            want = manifest.warm.standby if manifest.warm is not None else 0
            ready = self._ready[template]
            while len(ready) > want:
                await self._discard(ready.pop())
            if len(ready) >= want:
                return
            try:
                assert manifest.warm is not None
                ready.append(await self._make(manifest, manifest.warm))
            except HangarError as exc:
                failures += 1
                log.warning("template %s: a standby VM failed to start (%s)", template, exc.message)
                if failures >= RETRIES:
                    log.error("template %s: no standby VMs until it is set again", template)
                    return
                await asyncio.sleep(RETRY_DELAY * failures)

    async def _make(self, manifest: ImageManifest, warm: WarmState) -> Standby:
        # Made when first needed (and again if someone deleted it while empty).
        if self.projects is not None and self.projects.find(PROJECT) is None:
            self.projects.insert(PROJECT, "standby VMs of warm templates (hangard's own)")
        name = f"standby-{uuid.uuid4().hex[:10]}"
        request = VMCreate(name=name, image=manifest.name)
        view, port = await self.warm.resume(request, manifest, warm, PROJECT, standby=True)
        if port is None:
            await self._delete(name)
            raise QemuFailed(f"template '{manifest.name}' resumed without its identity port")
        entry = Standby(view.id, name, view.macs[0], port)
        try:
            record = self.vms.repo.by_id(view.id)
            if record is not None:
                await warm_up_sshd(view, self.vms.agent(record.config))
        except (OSError, TimeoutError, HangarError) as exc:
            # Only slower: the claim still works.
            log.warning("standby VM %s: sshd not warmed up (%s)", name, exc)
        except BaseException:  # cancelled (drained): it is in no list yet
            await self._discard(entry)
            raise
        return entry

    async def _discard(self, entry: Standby) -> None:
        entry.port.close()
        await self._delete(entry.name)

    async def _delete(self, name: str) -> None:
        try:
            await self.vms.delete(name, force=True, project=PROJECT)
        except HangarError as exc:
            log.warning("standby VM %s: not deleted (%s)", name, exc.message)

    # --- claiming -----------------------------------------------------------------------

    async def claim(self, image: ImageManifest, request: VMCreate, project: str) -> VMView | None:
        """A standby VM of ``image`` as new VM ``request.name`` of ``project`` (the name
        checked free by the caller), or None: none ready, or ``request`` asks for more
        than a name. Raises what the project's quota check raises."""
        warm = image.warm
        if warm is None or not warm.standby or not fits(request, warm):
            return None
        ready = self._ready.get(image.name)
        if not ready:
            self.refill(image.name)
            return None
        entry = ready.pop(0)
        try:
            return await self._claim(entry, request, project)
        except _Unclaimable as exc:
            log.warning("standby VM %s: not claimed (%s)", entry.name, exc)
            await self._discard(entry)
            return None
        except BaseException:
            if entry.spoiled:
                await self._discard(entry)
            else:
                ready.insert(0, entry)  # the quota said no: it stays a standby
            raise
        finally:
            # Later: a new standby's resume would take CPU from the VM just claimed
            # while its user connects.
            self.refill(image.name, delay=REFILL_DELAY)

    async def _claim(self, entry: Standby, request: VMCreate, project: str) -> VMView:
        vms = self.vms
        record = vms.repo.by_id(entry.vm_id)
        runtime = vms.supervisor.get(entry.vm_id)
        if record is None or record.project != PROJECT or runtime is None:
            raise _Unclaimable("it is gone")
        if await runtime.power_state() is not PowerState.RUNNING:
            raise _Unclaimable("it is not running")
        config = _claimed(record.config, request)
        added = [
            (i, fwd)
            for i, nic in enumerate(config.nics)
            for fwd in nic.forwards
            if fwd not in record.config.nics[i].forwards
        ]
        async with vms.locks[entry.vm_id]:
            async with vms.locks[ProjectKey(project)]:
                ports.check_free((fwd for _, fwd in added), owners=vms.port_owners(config))
                # The same admission as a launch (services/quota.py); the reservation
                # settles when the row moves into the project.
                release = None
                if vms.quota_check is not None:
                    release = await vms.quota_check(project, config)
                try:
                    vms.repo.move(entry.vm_id, project, config)
                except BaseException:
                    if release is not None:
                        await release()
                    raise
            forwarded: list[tuple[str, PortForward]] = []
            try:
                for i, fwd in added:
                    netdev = nic_device(config, i, config.nics[i])["netdev"]
                    await hmp.hostfwd_add(
                        runtime.monitor, netdev, fwd, config.nics[i].address or None
                    )
                    forwarded.append((netdev, fwd))
                if config.cloud_init is not None:
                    macs = [nic.mac for nic in config.nics]
                    seed = render_seed(config.cloud_init, config.id, macs)
                    await asyncio.to_thread(write_seed_iso, seed, vms.files(config).seed)
                entry.spoiled = True
                await identity.rename(entry.port, request.name, entry.mac)
            except BaseException as exc:
                vms.repo.move(entry.vm_id, PROJECT, record.config)  # then discarded
                for netdev, fwd in forwarded:
                    with contextlib.suppress(HangarError):
                        await hmp.hostfwd_remove(runtime.monitor, netdev, fwd)
                if isinstance(exc, HangarError):
                    raise _Unclaimable(exc.message) from exc
                if isinstance(exc, Exception):
                    raise _Unclaimable(str(exc)) from exc
                entry.spoiled = True
                raise
            runtime.name = request.name
        entry.port.close()
        return await vms.get(request.name, project)


class _Unclaimable(Exception):
    pass


def launched_seed(cloud_init: CloudInit | None, request: VMCreate) -> CloudInit | None:
    """The seed settings of a VM made from a warm template as ``request`` asks: its
    name, and the caller's keys and user-data, never the template's (they take effect
    at the guest's next boot, as a new cloud-init instance). Pure."""
    if cloud_init is None:
        return None
    return cloud_init.model_copy(
        update={
            "hostname": request.name,
            "ssh_keys": request.ssh_keys,
            "user_data": request.user_data,
        }
    )


def _claimed(config: VMConfig, request: VMCreate) -> VMConfig:
    """A standby VM's config under the name, cloud-init settings and with the port
    forwards (after its own, to sshd) that ``request`` asks. Pure."""
    cloud_init = launched_seed(config.cloud_init, request)
    nics = tuple(
        nic.model_copy(update={"forwards": (*nic.forwards, *request.nics[i].forwards)})
        if request.nics is not None and i < len(request.nics)
        else nic
        for i, nic in enumerate(config.nics)
    )
    return config.model_copy(update={"name": request.name, "cloud_init": cloud_init, "nics": nics})


async def warm_up_sshd(view: VMView, agent: GuestAgent) -> None:
    """Have a standby guest's sshd run its connection path once, so that TCG has
    translated it before a user connects: fork and re-exec, key exchange, and a
    public key login as the VM's user with a key made for this and refused (the
    guest accepts no key of hangard's). The guest does it, to itself, through its
    ``agent`` (:data:`WARMUP_SCRIPT`): hangard opens no ssh connection into a guest.
    Without an ssh client in the guest, sshd's banner only. Not for a VM whose sshd
    is forwarded nowhere (it serves no ``hangar shell``)."""
    if not any(f.guest_port == SSH_PORT for f in view.forwards):
        return
    private = identity.openssh_private(ed25519.Ed25519PrivateKey.generate())
    argv = ["sh", "-c", WARMUP_SCRIPT, "hangar-warmup", view.user or "root", str(SSH_PORT)]
    async with asyncio.timeout(WARMUP_TIMEOUT):
        # The login's own outcome is a refusal: only the agent's errors matter.
        await agent.exec(argv, input_data=private, timeout=WARMUP_TIMEOUT)
