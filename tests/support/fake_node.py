"""A Node with no QEMU: what VMService asks of "the place VMs run", kept in memory.

Faithful to the Node contract (hangar/node/base.py) in what services rely on: a start
that fails leaves nothing running; stop says how the guest went ("acpi", or
"forced-after-timeout" for a guest that ignores the power button); every end of a VM
is reported to the exit handler, as LocalNode's supervisor does; hotplug only where
the machine's capabilities say so. Tests steer it: ``fail_start``, ``ignores_acpi``,
:meth:`guest_ends` (a guest that powers off, reboots or crashes by itself), ``found``
(what :meth:`adopt` finds after a restart).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hangar.errors import QemuFailed
from hangar.node.base import (
    Gone,
    Node,
    Outcome,
    ReadyHook,
    Running,
    SavedGuest,
    SerialPosition,
)
from hangar.services.lifecycle import PowerState
from hangar.spec.image import ImageManifest
from hangar.spec.vm import DataDisk, NicConfig, VMConfig

SLOTS = 8  # NIC slots of a hotplug-capable fake machine
_pids = itertools.count(4000)


@dataclass
class FakeVM:
    vm_id: str
    name: str
    pid: int
    started: float
    state: PowerState = PowerState.RUNNING
    nics: list[str] = field(default_factory=list)  # MACs, in plug order
    disks: list[str] = field(default_factory=list)  # volume ids, in plug order
    sizes: dict[str, int] = field(default_factory=dict)  # disk ("root" or volume) -> size
    memory: SavedGuest | None = None


class FakeNode(Node):
    def __init__(self) -> None:
        self.vms: dict[str, FakeVM] = {}
        self.files: set[str] = set()  # ids of the VMs whose files exist
        self.isos: set[str] = set()
        self.fail_start: set[str] = set()  # VM names whose start fails
        self.ignores_acpi: set[str] = set()
        self.found: dict[str, PowerState | Gone] = {}
        self.starts: list[str] = []  # names, in start order
        self.images: dict[Path, int] = {}  # image files made here -> size
        # Root disk copies: (VM id, target, full, whether the VM was running).
        self.copies: list[tuple[str, Path, bool, bool]] = []
        self.root_sizes: dict[str, int] = {}  # VM id -> root disk size, grown offline

    def is_running(self, vm_id: str) -> bool:
        return vm_id in self.vms

    def pid(self, vm_id: str) -> int | None:
        vm = self.vms.get(vm_id)
        return vm.pid if vm else None

    async def power_state(self, vm_id: str) -> PowerState | None:
        vm = self.vms.get(vm_id)
        return vm.state if vm else None

    async def start(
        self,
        config: VMConfig,
        *,
        memory: SavedGuest | None = None,
        ready: ReadyHook | None = None,
    ) -> Running:
        if config.id in self.vms:
            raise QemuFailed(f"VM '{config.name}' runs already")
        self.starts.append(config.name)
        if config.name in self.fail_start:
            raise QemuFailed("QEMU exited before its QMP socket answered")
        vm = FakeVM(config.id, config.name, next(_pids), time.monotonic(), memory=memory)
        vm.nics = [nic.mac for nic in config.nics]
        self.vms[config.id] = vm
        if ready is not None:
            try:
                await ready(vm)
            except BaseException:
                del self.vms[config.id]
                raise
        return vm

    async def stop(self, config: VMConfig, *, timeout: float) -> str:
        vm = self._live(config.id)
        if config.name in self.ignores_acpi:
            await self._end(vm, Outcome(PowerState.STOPPED, "force-stopped after timeout"))
            return "forced-after-timeout"
        await self._end(vm, Outcome(PowerState.STOPPED, "stopped: the guest powered off"))
        return "acpi"

    async def kill(self, vm_id: str, reason: str) -> None:
        await self._end(self._live(vm_id), Outcome(PowerState.STOPPED, reason))

    async def pause(self, vm_id: str) -> None:
        self._live(vm_id).state = PowerState.PAUSED

    async def resume(self, vm_id: str) -> None:
        self._live(vm_id).state = PowerState.RUNNING

    async def plug_nic(self, vm_id: str, config: VMConfig, position: int) -> None:
        self._hotplug(vm_id, config).nics.append(config.nics[position].mac)

    async def unplug_nic(self, vm_id: str, config: VMConfig, position: int, nic: NicConfig) -> None:
        self._hotplug(vm_id, config).nics.remove(nic.mac)

    async def plug_disk(self, vm_id: str, config: VMConfig, disk: DataDisk) -> None:
        self._hotplug(vm_id, config).disks.append(disk.volume)

    async def unplug_disk(self, vm_id: str, disk: DataDisk) -> None:
        self._live(vm_id).disks.remove(disk.volume)

    async def resize_disk(self, vm_id: str, size: int, disk: DataDisk | None = None) -> None:
        self._live(vm_id).sizes[disk.volume if disk else "root"] = size

    async def make_image(self, path: Path, fmt: str, size: int) -> None:
        self.images[path] = size

    async def resize_image(self, path: Path, fmt: str, size: int) -> None:
        if path not in self.images:
            raise QemuFailed(f"no image {path}")
        self.images[path] = size

    async def copy_root_disk(
        self,
        config: VMConfig,
        target: Path,
        *,
        full: bool,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.copies.append((config.id, target, full, config.id in self.vms))

    async def resize_root_image(self, config: VMConfig, size: int) -> None:
        if config.id in self.vms:
            raise QemuFailed("the root disk is open by the VM's QEMU")
        self.root_sizes[config.id] = size

    async def screenshot(self, vm_id: str) -> bytes:
        self._live(vm_id)
        return b"\x89PNG\r\n\x1a\nfake"

    async def open_display(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise OSError("a fake node has no displays")

    def pin_nics(self, config: VMConfig) -> tuple[tuple[NicConfig, ...], int | None]:
        if not self.capabilities(config).hotplug:
            return config.nics, None
        nics = tuple(
            n.model_copy(update={"slot": n.slot if n.slot is not None else i})
            for i, n in enumerate(config.nics)
        )
        free = [s for s in range(SLOTS) if s not in {n.slot for n in nics}]
        return nics, free[0] if free else None

    async def make_files(
        self,
        config: VMConfig,
        *,
        image: ImageManifest | None,
        image_dir: Path | None,
        full: bool,
        iso: Path | None,
    ) -> None:
        self.files.add(config.id)
        if iso is not None:
            self.isos.add(config.id)

    def remove_files(self, config: VMConfig) -> None:
        self.files.discard(config.id)
        self.isos.discard(config.id)

    def serial_log(self, config: VMConfig) -> Path:
        return Path("/nonexistent/fake-node") / config.id / "serial.log"

    async def serial_tail(
        self, config: VMConfig, lines: int
    ) -> tuple[bytes, SerialPosition] | None:
        return (b"", SerialPosition(0)) if config.id in self.files else None

    async def serial_from(
        self, config: VMConfig, position: SerialPosition
    ) -> tuple[bytes, SerialPosition] | None:
        return (b"", position) if config.id in self.files else None

    def remove_iso(self, config: VMConfig) -> None:
        self.isos.discard(config.id)

    async def open_console(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise OSError("a fake node has no consoles")

    async def adopt(self, config: VMConfig) -> PowerState | Gone | None:
        found = self.found.get(config.id)
        if isinstance(found, PowerState):
            self.vms[config.id] = FakeVM(config.id, config.name, next(_pids), 0.0, state=found)
        return found

    async def detach_all(self) -> None:
        self.vms.clear()

    async def guest_ends(self, vm_id: str, outcome: Outcome) -> None:
        """The guest ends by itself (powers off, reboots, crashes)."""
        await self._end(self._live(vm_id), outcome)

    async def _end(self, vm: FakeVM, outcome: Outcome) -> None:
        del self.vms[vm.vm_id]
        await self._report_exit(vm.vm_id, vm.name, outcome)

    def _live(self, vm_id: str) -> FakeVM:
        vm = self.vms.get(vm_id)
        if vm is None:
            raise QemuFailed("the VM has no running QEMU")
        return vm

    def _hotplug(self, vm_id: str, config: VMConfig) -> FakeVM:
        if not self.capabilities(config).hotplug:
            raise QemuFailed(f"{config.machine} takes no hotplug")
        return self._live(vm_id)
