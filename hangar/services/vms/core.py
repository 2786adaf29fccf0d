"""What every part of the VM service shares: its state (repository, locks, Node,
networks), the views, the start sequence and the port checks.

The database holds intent and the last recorded state; the Node (a running QEMU)
holds the truth. Each VM has one lock: actions on one VM run one at a time; actions
on different VMs run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from hangar.errors import (
    InvalidInput,
    QemuFailed,
)
from hangar.node.base import Node, Outcome, ReadyHook, Running, SavedGuest
from hangar.node.local import LocalNode
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services import ports
from hangar.services.lifecycle import PowerState
from hangar.services.networks import NetworkService, NicAddress
from hangar.services.storage.images import ImageStore
from hangar.spec.host import HostFacts
from hangar.spec.vm import PortForward, VMConfig
from hangar.state.locks import LocalLocks, Locks
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


class VMCore:
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

    @property
    def locks(self) -> Locks:
        """The per-VM locks (by VM id): other services take them to act on a VM's files."""
        return self._locks

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

    def _fresh_lease_table(self, record: VMRecord) -> VMRecord:
        """A booting VM's user-mode network starts with an empty DHCP lease table, whose
        base is the guest's own address again (NicConfig.dhcp_start)."""
        nics = tuple(nic.model_copy(update={"dhcp_start": None}) for nic in record.config.nics)
        config = record.config.model_copy(update={"nics": nics})
        self.repo.set_config(config)
        return dataclasses.replace(record, config=config)

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

    def _detach_iso(self, config: VMConfig) -> None:
        self.repo.set_config(config.model_copy(update={"iso": None}))
        self.node.remove_iso(config)

    async def _on_exit(self, vm_id: str, name: str, outcome: Outcome) -> None:
        """How a VM's end is recorded: :class:`VMLifecycle` says."""
        raise NotImplementedError
