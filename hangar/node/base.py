"""The Node boundary: what services ask of "the place VMs run".

A service decides (state gates, quotas, names, networks, the database) and asks a Node
to act on a VM's QEMU: start it (booting, or resuming a saved guest), stop it, read its
power state, pause and resume it, plug and unplug NICs, adopt the QEMUs that outlived
a hangard restart. This host's QEMUs are :class:`hangar.node.local.LocalNode`; a
cluster adds a Node that forwards to another host's hangard; component tests drive
services over a fake one (tests/support/fake_node.py).

What a machine type can do is declared here (:func:`capabilities`), once, instead of
``machine == "q35"`` checks in every service.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hangar.services.lifecycle import PowerState
from hangar.services.qemu.argv import HOTPLUG_PORTS
from hangar.spec.image import ImageManifest
from hangar.spec.vm import DataDisk, NicConfig, VMConfig


@dataclass(frozen=True)
class Capabilities:
    """What a VM of one machine type can do on a Node."""

    # Devices (NICs, disks) plugged into and out of a running guest: q35's PCIe root
    # ports take them; microvm's virtio-mmio devices exist only from the start.
    hotplug: bool
    # How many volumes it takes, each in a slot of its own (q35: a PCIe root port).
    disk_slots: int
    # The guest reseeds its kernel's CRNG by itself when a saved guest of it is loaded
    # (QEMU's vmgenid: q35's ACPI tables carry it, QEMU 7.2's microvm ones do not).
    reseeds_on_load: bool


def capabilities(config: VMConfig) -> Capabilities:
    """The capabilities of a VM of ``config`` on any Node of this hangar. Pure."""
    q35 = config.machine == "q35"
    return Capabilities(
        hotplug=q35, disk_slots=HOTPLUG_PORTS, reseeds_on_load=q35 and config.entropy
    )


@dataclass(frozen=True)
class SerialPosition:
    """Where a reader is in a VM's serial output: an offset in the current log, and
    which rotation of it that offset belongs to (opaque to services)."""

    offset: int
    rotation: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class SavedGuest:
    """A guest to resume: a saved stream, and the RAM file it was saved beside (None:
    the stream holds the RAM too). See services/templates/ram.py."""

    stream: Path
    ram: Path | None = None
    # Run once the guest is loaded, before it runs (a warm launch connects to the
    # guest's identity port then: see services/templates/identity.py).
    loaded: Callable[[], Awaitable[None]] | None = None


class Running(Protocol):
    """A started VM, as a ready hook sees it."""

    @property
    def vm_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def started(self) -> float: ...


# Runs once a started VM runs (e.g. a warm launch's new identity); if it raises, the
# VM is stopped again.
ReadyHook = Callable[[Running], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """How a VM's QEMU ended."""

    state: PowerState
    reason: str
    reboot: bool = False
    # The guest powered itself off (not asked by hangard): an installer has finished.
    guest_poweroff: bool = False


@dataclass(frozen=True)
class Gone:
    """A VM whose QEMU is no longer there (found when hangard starts)."""

    clean: bool  # it exited with status 0 (the guest powered off)
    reason: str


# Called when a VM's QEMU ends: (VM id, VM name, how).
ExitHandler = Callable[[str, str, Outcome], Awaitable[None]]


class Node(abc.ABC):
    """Where VMs run. Methods take the VM's id (or config) and raise
    :class:`hangar.errors.QemuFailed` when the VM's QEMU cannot do what is asked."""

    _exit_handler: ExitHandler | None = None

    def capabilities(self, config: VMConfig) -> Capabilities:
        return capabilities(config)

    def on_exit(self, handler: ExitHandler) -> None:
        """Call ``handler`` whenever a VM's QEMU on this Node ends (one handler)."""
        self._exit_handler = handler

    async def _report_exit(self, vm_id: str, name: str, outcome: Outcome) -> None:
        if self._exit_handler is not None:
            await self._exit_handler(vm_id, name, outcome)

    @abc.abstractmethod
    def is_running(self, vm_id: str) -> bool:
        """True while the VM has a QEMU on this Node (running, paused, in transition)."""

    @abc.abstractmethod
    def pid(self, vm_id: str) -> int | None: ...

    @abc.abstractmethod
    async def power_state(self, vm_id: str) -> PowerState | None:
        """The VM's state as its QEMU reports it; None when it has no QEMU here."""

    @abc.abstractmethod
    async def start(
        self,
        config: VMConfig,
        *,
        memory: SavedGuest | None = None,
        ready: ReadyHook | None = None,
    ) -> Running:
        """Start the VM paused, wire it up, load ``memory`` (a saved guest) if given,
        then run it and call ``ready``. On failure nothing is left running."""

    @abc.abstractmethod
    async def stop(self, config: VMConfig, *, timeout: float) -> str:
        """Ask the guest to power off (ACPI, then its guest agent when it has one), force
        it after ``timeout`` s. Says how: "acpi", "agent" or "forced-after-timeout"."""

    @abc.abstractmethod
    async def kill(self, vm_id: str, reason: str) -> None:
        """End the VM's QEMU now (disks flushed when QEMU can still do it)."""

    @abc.abstractmethod
    async def pause(self, vm_id: str) -> None: ...

    @abc.abstractmethod
    async def resume(self, vm_id: str) -> None: ...

    @abc.abstractmethod
    async def plug_nic(self, vm_id: str, config: VMConfig, position: int) -> None:
        """Hot-plug NIC ``config.nics[position]`` into the running VM."""

    @abc.abstractmethod
    async def unplug_nic(self, vm_id: str, config: VMConfig, position: int, nic: NicConfig) -> None:
        """Unplug a NIC from the running VM; returns once the guest let go of it."""

    @abc.abstractmethod
    async def plug_disk(self, vm_id: str, config: VMConfig, disk: DataDisk) -> None:
        """Hot-plug volume ``disk`` (already in ``config.data_disks``) into the running VM."""

    @abc.abstractmethod
    async def unplug_disk(self, vm_id: str, disk: DataDisk) -> None:
        """Unplug a volume from the running VM; returns once the guest let go of it."""

    @abc.abstractmethod
    async def resize_disk(self, vm_id: str, size: int, disk: DataDisk | None = None) -> None:
        """Grow a running VM's root disk (``disk`` None) or volume ``disk`` to ``size``
        bytes; the guest sees the new size at once."""

    @abc.abstractmethod
    async def make_image(self, path: Path, fmt: str, size: int) -> None:
        """An empty disk image file of ``size`` bytes (a volume's) on this Node."""

    @abc.abstractmethod
    async def resize_image(self, path: Path, fmt: str, size: int) -> None:
        """Grow a disk image file no QEMU has open (a stopped VM's disk, a volume)."""

    @abc.abstractmethod
    async def copy_root_disk(
        self,
        config: VMConfig,
        target: Path,
        *,
        full: bool,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """Copy the VM's root disk, as of now, into the new qcow2 file ``target``: of a
        running or paused VM without stopping it, of a stopped one from its file.
        ``full``: an independent copy; else one hanging from the image's disk."""

    @abc.abstractmethod
    async def resize_root_image(self, config: VMConfig, size: int) -> None:
        """Grow the root disk of a VM that is not running (its QEMU has it not open)."""

    @abc.abstractmethod
    async def screenshot(self, vm_id: str) -> bytes:
        """The running VM's screen as PNG bytes."""

    @abc.abstractmethod
    async def open_display(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the running VM's display (VNC; OSError if it does not answer)."""

    @abc.abstractmethod
    def pin_nics(self, config: VMConfig) -> tuple[tuple[NicConfig, ...], int | None]:
        """The NICs with the slots they are plugged in written down (so later changes
        never move a plugged NIC), and the first free slot for one more (None: none)."""

    @abc.abstractmethod
    async def make_files(
        self,
        config: VMConfig,
        *,
        image: ImageManifest | None,
        image_dir: Path | None,
        full: bool,
        iso: Path | None,
    ) -> None:
        """The VM's files on this Node: its disk from ``image`` (a linked clone, or a
        copy with ``full``), cloud-init seed and installer ``iso``. On failure none."""

    @abc.abstractmethod
    def remove_files(self, config: VMConfig) -> None:
        """Every file made for the VM on this Node."""

    @abc.abstractmethod
    def serial_log(self, config: VMConfig) -> Path:
        """Where the VM's serial output is kept on this Node."""

    @abc.abstractmethod
    async def serial_tail(
        self, config: VMConfig, lines: int
    ) -> tuple[bytes, SerialPosition] | None:
        """The last ``lines`` lines of the VM's serial output and where to follow it
        from; None when the VM has no files here (it was deleted)."""

    @abc.abstractmethod
    async def serial_from(
        self, config: VMConfig, position: SerialPosition
    ) -> tuple[bytes, SerialPosition] | None:
        """What the serial output gained since ``position``, and the new position
        (across rotations of the log); None when the VM has no files here any more."""

    @abc.abstractmethod
    def remove_iso(self, config: VMConfig) -> None:
        """The VM's copy of its installer ISO (it boots from its disk alone next)."""

    @abc.abstractmethod
    async def open_console(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the running VM's serial console (OSError if it does not answer)."""

    @abc.abstractmethod
    async def adopt(self, config: VMConfig) -> PowerState | Gone | None:
        """After hangard restarted: take over the VM's QEMU if it still runs (its
        state), else say how it went away (None: it was not running)."""

    @abc.abstractmethod
    async def detach_all(self) -> None:
        """hangard is stopping: let go of every QEMU, leaving the VMs running."""
