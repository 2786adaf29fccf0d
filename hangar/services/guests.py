"""Reaching inside a running guest: agent exec, what the agent reports, the screen.

Built on :class:`hangar.services.vms.VMService` (its records, files and agents).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel

from hangar.errors import Conflict, HangarError, StateConflict
from hangar.services.lifecycle import PowerState
from hangar.services.qga.agent import AgentUnavailable, reply_object, reply_text
from hangar.services.qga.agent import ExecResult as ExecResult  # the view of a run, re-exported
from hangar.services.vms import VMService
from hangar.state.vms import DEFAULT_PROJECT, VMRecord

log = logging.getLogger(__name__)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INFO_TIMEOUT = 5.0


class GuestAddress(BaseModel):
    interface: str
    mac: str | None
    address: str
    prefix: int | None
    family: str


class GuestInfo(BaseModel):
    """What the guest agent says about the guest; ``agent`` False when it did not answer."""

    agent: bool
    reason: str = ""
    hostname: str | None = None
    os: str | None = None
    kernel: str | None = None
    addresses: list[GuestAddress] = []


class GuestService:
    def __init__(self, vms: VMService):
        self.vms = vms

    async def _running(self, name: str, project: str, what: str) -> VMRecord:
        record = self.vms.repo.get(name, project)
        state = await self.vms.state_of(record)
        if state is not PowerState.RUNNING:
            raise StateConflict(name, what, state.value, ["running"])
        return record

    async def exec(
        self,
        name: str,
        argv: list[str],
        *,
        input_data: bytes | None = None,
        timeout: float = 60.0,
        project: str = DEFAULT_PROJECT,
    ) -> ExecResult:
        """Run ``argv`` in the guest through its agent; its output and exit code."""
        record = await self._running(name, project, "run a command in")
        if not record.config.agent:
            raise Conflict(
                f"VM '{name}' has no guest agent channel",
                hint="launch an image with qemu-guest-agent, such as debian-12",
            )
        return await self.vms.agent(record.config).exec(
            argv, input_data=input_data, timeout=timeout
        )

    async def info(self, name: str, project: str = DEFAULT_PROJECT) -> GuestInfo:
        """Hostname, OS and addresses from the agent; never raises for a silent agent."""
        record = self.vms.repo.get(name, project)
        state = await self.vms.state_of(record)
        if not record.config.agent:
            return GuestInfo(agent=False, reason="this VM has no guest agent channel")
        if state is not PowerState.RUNNING:
            return GuestInfo(agent=False, reason=f"the VM is {state.value}")
        agent = self.vms.agent(record.config)
        try:
            host = await agent.call("guest-get-host-name", timeout=INFO_TIMEOUT)
            osinfo = await agent.call("guest-get-osinfo", timeout=INFO_TIMEOUT)
            nics = await agent.call("guest-network-get-interfaces", timeout=INFO_TIMEOUT)
        except HangarError as exc:
            return GuestInfo(agent=False, reason=exc.message)
        try:
            host = reply_object(host, "guest-get-host-name", name)
            osinfo = reply_object(osinfo, "guest-get-osinfo", name)
            addresses = parse_addresses(nics)
        except (HangarError, AttributeError, TypeError, KeyError, ValueError) as exc:
            why = exc.message if isinstance(exc, HangarError) else "malformed addresses"
            return GuestInfo(agent=False, reason=f"the guest agent misbehaves: {why}")
        return GuestInfo(
            agent=True,
            hostname=reply_text(host, "host-name"),
            os=reply_text(osinfo, "pretty-name") or reply_text(osinfo, "name"),
            kernel=reply_text(osinfo, "kernel-release"),
            addresses=addresses,
        )

    async def screenshot(self, name: str, project: str = DEFAULT_PROJECT) -> bytes:
        """The guest's screen as PNG (QMP screendump, QEMU >= 7.1)."""
        record = await self._with_display(name, project, "take a screenshot of")
        if not self.vms.node.is_running(record.id):
            raise StateConflict(name, "take a screenshot of", "stopped", ["running", "paused"])
        data = await self.vms.node.screenshot(record.id)
        if not data.startswith(PNG_MAGIC):
            raise AgentUnavailable(f"QEMU's screendump of '{name}' is not a PNG")
        return data

    async def open_display(
        self, name: str, project: str = DEFAULT_PROJECT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to QEMU's VNC server of a running or paused VM with a display.
        Raises :class:`OSError` when QEMU's socket does not answer."""
        record = await self._with_display(name, project, "open the display of")
        return await self.vms.node.open_display(record.id)

    async def _with_display(self, name: str, project: str, action: str) -> VMRecord:
        """VM ``name``, if it runs (or is paused) and has a display."""
        record = self.vms.repo.get(name, project)
        state = await self.vms.state_of(record)
        if state not in (PowerState.RUNNING, PowerState.PAUSED):
            raise StateConflict(name, action, state.value, ["running", "paused"])
        if not record.config.graphics:
            raise Conflict(
                f"VM '{name}' has no display",
                hint="launch the VM with graphics (ISO installs have them)",
            )
        return record


def parse_addresses(nics: Any) -> list[GuestAddress]:
    """``guest-network-get-interfaces`` -> addresses, loopback left out. Pure."""
    found = []
    for nic in nics or []:
        if nic.get("name") == "lo":
            continue
        for ip in nic.get("ip-addresses") or []:
            found.append(
                GuestAddress(
                    interface=str(nic.get("name", "")),
                    mac=nic.get("hardware-address"),
                    address=str(ip.get("ip-address", "")),
                    prefix=ip.get("prefix"),
                    family=str(ip.get("ip-address-type", "")),
                )
            )
    return found
