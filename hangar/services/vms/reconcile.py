"""A VM's running side seen from hangard: QEMUs adopted after a restart, let go at
shutdown; consoles and serial output."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from hangar.errors import (
    StateConflict,
)
from hangar.node.base import Node, SerialPosition
from hangar.services.lifecycle import PowerState
from hangar.services.vms.core import VMCore
from hangar.spec.vm import VMConfig
from hangar.state.vms import DEFAULT_PROJECT

log = logging.getLogger(__name__)


class VMReconcile(VMCore):
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
