"""This host's QEMUs: the :class:`Node` that holds today's QEMU, QMP, supervisor,
sandbox and files.

Everything here touches a QEMU process, socket or file; nothing above it should (the
services that still reach :meth:`LocalNode.runtime` are listed in
tests/unit/test_layers.py, to move behind Node methods next).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from hangar.errors import Conflict, HangarError, QemuFailed
from hangar.host.sockets import open_unix_connection, reachable_socket
from hangar.node.base import (
    Gone,
    Node,
    Outcome,
    ReadyHook,
    Running,
    SavedGuest,
    SerialPosition,
)
from hangar.node.files import full_copy
from hangar.paths import Paths
from hangar.runner import CommandRunner
from hangar.services import guest_files
from hangar.services.lifecycle import PowerState
from hangar.services.qemu import confine, hotplug, img, layers, process, serial_log
from hangar.services.qemu.argv import (
    NIC_PORTS,
    RamFile,
    VMFiles,
    data_disk_node,
    nic_slot,
    render_argv,
)
from hangar.services.qga.agent import GuestAgent
from hangar.services.qmp.backup import backup
from hangar.services.qmp.migration import load_memory, root_node
from hangar.services.supervisor import Runtime, Supervisor
from hangar.spec.host import HostFacts
from hangar.spec.image import ImageManifest
from hangar.spec.vm import DataDisk, NicConfig, VMConfig

log = logging.getLogger(__name__)

FORCE_STOP_TIMEOUT = 10.0


class LocalNode(Node):
    def __init__(
        self,
        paths: Paths,
        host: HostFacts,
        runner: CommandRunner,
        *,
        sandbox: bool,
    ):
        self.paths = paths
        self.host = host
        self.runner = runner
        # Run every QEMU as the VM's own unprivileged uid in a namespace of its own
        # (services/qemu/jail.py). hangard turns it on; tests whose QEMU is a fake
        # script from the virtualenv (outside any sandbox's view) leave it off.
        self.sandbox = sandbox
        self.supervisor = Supervisor(self._exited)
        self._agents: dict[str, GuestAgent] = {}

    # --- local only (for the services not yet behind Node methods) ------------------

    def files(self, config: VMConfig) -> VMFiles:
        folder = self.paths.vm_dir(config.id)
        return VMFiles(
            dir=folder,
            runtime=self.paths.vm_runtime(config.id),
            active_disk=layers.active_disk(folder),
        )

    def runtime(self, vm_id: str) -> Runtime | None:
        return self.supervisor.get(vm_id)

    def agent(self, config: VMConfig) -> GuestAgent:
        """The guest agent client of a VM (one per VM: its channel serves one client)."""
        agent = self._agents.get(config.id)
        if agent is None:
            agent = self._agents[config.id] = GuestAgent(
                self.files(config).agent_socket, config.name
            )
        return agent

    async def make_files(
        self,
        config: VMConfig,
        *,
        image: ImageManifest | None,
        image_dir: Path | None,
        full: bool,
        iso: Path | None,
    ) -> None:
        """The VM's folder with its disk (a linked clone of ``image``'s, or with ``full``
        a copy and its boot files; an empty one without an image), its cloud-init seed
        and installer ISO. On failure nothing is left."""
        files = self.files(config)
        files.dir.mkdir(parents=True)
        try:
            if image is None or image_dir is None:
                await asyncio.to_thread(
                    img.create, self.runner, files.disk, "qcow2", config.disk_size
                )
            elif full:
                await asyncio.to_thread(
                    full_copy, self.runner, image_dir, image, files.disk, config.disk_size
                )
            else:
                await asyncio.to_thread(
                    img.create_overlay,
                    self.runner,
                    image_dir / image.disk,
                    files.disk,
                    config.disk_size,
                )
            await asyncio.to_thread(guest_files.prepare, config, files, self.host, iso)
        except BaseException:
            shutil.rmtree(files.dir, ignore_errors=True)
            raise

    def remove_files(self, config: VMConfig) -> None:
        """Every file hangard made for the VM on this host."""
        files = self.files(config)
        shutil.rmtree(files.dir, ignore_errors=True)
        shutil.rmtree(files.runtime, ignore_errors=True)

    def serial_log(self, config: VMConfig) -> Path:
        return self.files(config).serial_log

    async def serial_tail(
        self, config: VMConfig, lines: int
    ) -> tuple[bytes, SerialPosition] | None:
        log = self.files(config).serial_log
        if not log.parent.exists():
            return None
        return await asyncio.to_thread(serial_log.tail, log, lines)

    async def serial_from(
        self, config: VMConfig, position: SerialPosition
    ) -> tuple[bytes, SerialPosition] | None:
        log = self.files(config).serial_log
        chunk, position = await asyncio.to_thread(serial_log.read_from, log, position)
        if not chunk and not log.parent.exists():
            return None
        return chunk, position

    def remove_iso(self, config: VMConfig) -> None:
        self.files(config).iso.unlink(missing_ok=True)

    async def open_console(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the VM's serial console; OSError when QEMU's does not answer."""
        return await open_unix_connection(self._live(vm_id).files.console_socket)

    async def plug_disk(self, vm_id: str, config: VMConfig, disk: DataDisk) -> None:
        await hotplug.plug(self._live(vm_id).monitor, config, disk)

    async def unplug_disk(self, vm_id: str, disk: DataDisk) -> None:
        await hotplug.unplug(self._live(vm_id).monitor, disk)

    async def resize_disk(self, vm_id: str, size: int, disk: DataDisk | None = None) -> None:
        monitor = self._live(vm_id).monitor
        # The root disk's node is 'root' until a live snapshot, then its newest overlay.
        node = data_disk_node(disk) if disk is not None else await root_node(monitor)
        await monitor.execute("block_resize", {"node-name": node, "size": size})

    async def make_image(self, path: Path, fmt: str, size: int) -> None:
        await asyncio.to_thread(img.create, self.runner, path, fmt, size)

    async def resize_image(self, path: Path, fmt: str, size: int) -> None:
        await asyncio.to_thread(img.resize, self.runner, path, fmt, size)

    async def copy_root_disk(
        self,
        config: VMConfig,
        target: Path,
        *,
        full: bool,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        source = self.files(config).disk
        runtime = self.supervisor.get(config.id)
        state = await runtime.power_state() if runtime is not None else None
        stopped = runtime is None
        if stopped and full:
            # The common case takes one qemu-img call, like copying by hand.
            await asyncio.to_thread(
                img.convert, self.runner, source, "qcow2", target, "qcow2", progress=progress
            )
            return
        info = await asyncio.to_thread(img.info, self.runner, source, "qcow2")
        backing_name = info.get("full-backing-filename")
        backing = Path(str(backing_name)) if backing_name and not full else None
        folder = self.files(config).dir
        if backing is not None and backing.is_relative_to(folder):
            # Snapshot layers stay with the source. A stopped source's copy hangs from
            # the disk under them; a running one's holds everything (QEMU's backup job
            # copies either the top layer alone or the whole disk).
            backing = (
                await asyncio.to_thread(_below_folder, self.runner, backing, folder)
                if stopped
                else None
            )
        if stopped:
            # -B: only what differs from the image's disk goes into the copy.
            await asyncio.to_thread(
                img.convert,
                self.runner,
                source,
                "qcow2",
                target,
                "qcow2",
                backing=backing,
                progress=progress,
            )
            return
        assert runtime is not None
        if state not in (PowerState.RUNNING, PowerState.PAUSED):
            raise Conflict(
                f"cannot copy VM '{config.name}' while it is {state.value if state else 'gone'}",
                hint="wait until it is running, paused or stopped",
            )
        size = int(info["virtual-size"])
        if backing is not None:
            await asyncio.to_thread(img.create_overlay, self.runner, backing, target, size)
        else:
            await asyncio.to_thread(img.create, self.runner, target, "qcow2", size)
        await backup(runtime.monitor, target, sync="top" if backing else "full", progress=progress)

    async def resize_root_image(self, config: VMConfig, size: int) -> None:
        await self.resize_image(self.files(config).disk, "qcow2", size)

    async def screenshot(self, vm_id: str) -> bytes:
        runtime = self._live(vm_id)
        # QEMU writes the file itself: into the VM's private runtime folder.
        target = runtime.files.runtime / f"screen-{uuid.uuid4().hex[:8]}.png"
        try:
            await runtime.monitor.execute("screendump", {"filename": str(target), "format": "png"})
            return await asyncio.to_thread(_read_no_follow, target)
        finally:
            with contextlib.suppress(OSError):
                target.unlink()

    async def open_display(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_unix_connection(self._live(vm_id).files.vnc_socket)

    def pin_nics(self, config: VMConfig) -> tuple[tuple[NicConfig, ...], int | None]:
        """On q35: the NICs with their slots (root ports) written down, so a later
        change of positions never moves a plugged NIC, and the first free slot (None
        when every root port is taken). Other machines: the NICs as they are."""
        if not self.capabilities(config).hotplug:
            return config.nics, None
        nics = tuple(
            n.model_copy(update={"slot": nic_slot(i, n)}) for i, n in enumerate(config.nics)
        )
        free = [s for s in range(NIC_PORTS) if s not in {n.slot for n in nics}]
        return nics, free[0] if free else None

    def forget(self, vm_id: str) -> None:
        """The VM is gone: drop what was kept for it."""
        self._agents.pop(vm_id, None)

    # --- Node -----------------------------------------------------------------------

    def is_running(self, vm_id: str) -> bool:
        return self.supervisor.get(vm_id) is not None

    def pid(self, vm_id: str) -> int | None:
        runtime = self.supervisor.get(vm_id)
        return runtime.pid if runtime else None

    async def power_state(self, vm_id: str) -> PowerState | None:
        runtime = self.supervisor.get(vm_id)
        return await runtime.power_state() if runtime is not None else None

    async def start(
        self,
        config: VMConfig,
        *,
        memory: SavedGuest | None = None,
        ready: ReadyHook | None = None,
    ) -> Running:
        files = self.files(config)
        ram: RamFile | None = None
        try:
            ram = await self._ram_file(memory, files)
            # hangard's own QMP socket, handed to QEMU (process.QmpSockets); launch
            # takes it over.
            qmp = process.open_qmp(files)
            try:
                argv = render_argv(
                    config,
                    self.host,
                    files,
                    incoming=memory is not None,
                    ram=ram,
                    qmp_fd=qmp.fd,
                )
                jail = (
                    await asyncio.to_thread(
                        confine.prepare,
                        self.paths.vms,
                        files,
                        config,
                        self.host,
                        ram=ram.path if ram is not None else None,
                    )
                    if self.sandbox
                    else None
                )
            except BaseException:
                qmp.close()
                raise
            runtime = await self.supervisor.launch(
                config.id, config.name, argv, files, jail, qmp=qmp
            )
        finally:
            if ram is not None and ram.path.is_relative_to(files.dir):
                # QEMU mapped its private copy before its QMP answered: the pages live
                # on in the mapping, and nothing is left to clean up after it.
                ram.path.unlink(missing_ok=True)
        runtime.transition = PowerState.STARTING
        if config.graphics:
            # QEMU made it with its umask; the screen is for hangard's proxy alone.
            # Through the checked socket: QEMU could have put a symlink in its place.
            with contextlib.suppress(OSError), reachable_socket(files.vnc_socket) as vnc:
                os.chmod(vnc, 0o600)
        try:
            if memory is not None:
                await load_memory(
                    runtime.monitor,
                    memory.stream,
                    alive=lambda: not files.exit_status.exists(),
                    ram_in_file=ram is not None,
                )
                if memory.loaded is not None:
                    await memory.loaded()
            await runtime.monitor.cont()
            if ready is not None:
                await ready(runtime)
        except BaseException:
            await self._kill(runtime, "failed to start")
            raise
        runtime.transition = None
        return runtime

    async def _ram_file(self, memory: SavedGuest | None, files: VMFiles) -> RamFile | None:
        """How the QEMU resuming ``memory`` gets its warm template's RAM file: mapped
        read-only where QEMU can (>= 8.2), else (sandboxed) a copy of its own, since an
        older QEMU opens the file read-write (confine.private_ram says why)."""
        if memory is None or memory.ram is None:
            return None
        if self.host.maps_read_only_ram:
            return RamFile(memory.ram, shared=False, read_only=True)
        if not self.sandbox:
            return RamFile(memory.ram, shared=False)  # QEMU is root's: no uid to keep out
        copy = await asyncio.to_thread(confine.private_ram, memory.ram, files)
        return RamFile(copy, shared=False)

    async def stop(self, config: VMConfig, *, timeout: float) -> str:
        runtime = self._live(config.id)
        agent = self.agent(config) if config.agent else None
        if await runtime.power_state() is PowerState.PAUSED:
            # A paused guest cannot see the power button.
            await runtime.monitor.cont()
        runtime.transition = PowerState.STOPPING
        runtime.stop_reason = "stopped: the guest powered off after the ACPI power button"
        await runtime.monitor.powerdown()
        # With an agent: a third of the time for ACPI, then the agent is asked too.
        acpi_wait = timeout / 3 if agent is not None else timeout
        try:
            await asyncio.wait_for(runtime.exited.wait(), acpi_wait)
            return "acpi"
        except TimeoutError:
            pass
        if agent is not None:
            asked = False
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
        await self._kill(
            runtime, f"force-stopped: the guest ignored the ACPI power button for {timeout:g} s"
        )
        return "forced-after-timeout"

    async def kill(self, vm_id: str, reason: str) -> None:
        await self._kill(self._live(vm_id), reason)

    async def _kill(self, runtime: Runtime, reason: str) -> None:
        """QMP quit (QEMU flushes disks), SIGKILL if that does not end it."""
        runtime.transition = PowerState.STOPPING
        runtime.stop_reason = reason
        await runtime.monitor.quit()
        try:
            await asyncio.wait_for(runtime.exited.wait(), FORCE_STOP_TIMEOUT)
        except TimeoutError:
            runtime.kill()
            await asyncio.wait_for(runtime.exited.wait(), FORCE_STOP_TIMEOUT)

    async def pause(self, vm_id: str) -> None:
        await self._live(vm_id).monitor.stop()

    async def resume(self, vm_id: str) -> None:
        await self._live(vm_id).monitor.cont()

    async def plug_nic(self, vm_id: str, config: VMConfig, position: int) -> None:
        monitor = self._live(vm_id).monitor
        await hotplug.plug_nic(monitor, config, position, config.nics[position])

    async def unplug_nic(self, vm_id: str, config: VMConfig, position: int, nic: NicConfig) -> None:
        await hotplug.unplug_nic(self._live(vm_id).monitor, config, position, nic)

    async def adopt(self, config: VMConfig) -> PowerState | Gone | None:
        files = self.files(config)
        runtime = await self.supervisor.adopt(config.id, config.name, files)
        if runtime is not None:
            return await runtime.power_state()
        status = process.read_exit_status(files)
        if status is not None and status.clean:
            return Gone(clean=True, reason="QEMU exited while hangard was away")
        why = status.describe() if status else "QEMU vanished"
        tail = process.serial_tail(files, 8)
        reason = f"{why} while hangard was away" + (
            "; last serial output:\n" + "\n".join(tail) if tail else ""
        )
        return Gone(clean=False, reason=reason)

    async def detach_all(self) -> None:
        await self.supervisor.detach_all()

    def _live(self, vm_id: str) -> Runtime:
        runtime = self.supervisor.get(vm_id)
        if runtime is None:
            raise QemuFailed("the VM has no running QEMU")
        return runtime

    async def _exited(self, runtime: Runtime, outcome: Outcome) -> None:
        await self._report_exit(runtime.vm_id, runtime.name, outcome)


def _read_no_follow(path: Path) -> bytes:
    """Read a file QEMU wrote in its runtime folder, which its (sandboxed, possibly
    compromised) uid may change: never through a symlink it put there."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _below_folder(runner: CommandRunner, layer: Path, folder: Path) -> Path | None:
    """The first file of ``layer``'s backing chain outside ``folder`` (the image's disk)."""
    current: Path | None = layer
    while current is not None and current.is_relative_to(folder):
        current = img.backing_file(runner, current)
    return current
