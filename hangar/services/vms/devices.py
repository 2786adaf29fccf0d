"""A VM's NICs: added to and removed from a stopped VM, or plugged into and out of
a running one where its machine takes hotplug."""

from __future__ import annotations

import logging

from hangar.errors import (
    NextStep,
    NotFound,
    ResourceLimit,
    StateConflict,
)
from hangar.services.lifecycle import PowerState
from hangar.services.vms.core import VMCore, VMView
from hangar.spec.network import tap_name
from hangar.spec.resolve import mac_from_id
from hangar.spec.vm import NicConfig, VMConfig
from hangar.state.locks import ProjectKey
from hangar.state.vms import DEFAULT_PROJECT, VMRecord

log = logging.getLogger(__name__)


class VMDevices(VMCore):
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
