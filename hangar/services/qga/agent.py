"""A client for qemu-guest-agent over the VM's virtio-serial channel (QEMU's unix socket).

The agent speaks QMP-style JSON but has no greeting and no ids, and it keeps
reading whatever an earlier, interrupted client wrote. So every conversation
starts the way QEMU's docs prescribe
(https://www.qemu.org/docs/master/interop/qemu-ga-ref.html#command-QGA-qapi-schema.guest-sync-delimited):
send 0xFF (the agent resets its parser), then ``guest-sync-delimited`` with a
random id; the agent answers with 0xFF followed by the id, and everything
before that is stale and skipped.

QEMU's chardev serves one client at a time: one :class:`GuestAgent` per VM and a
lock around each conversation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hangar.errors import Conflict, QemuFailed

SYNC_TIMEOUT = 5.0
EXEC_POLL = 0.1


class AgentUnavailable(Conflict):
    """The guest agent did not answer (not installed, not started yet, or hung)."""

    kind = "agent-unavailable"


class GuestCommandTimeout(Conflict):
    """A command run through the agent did not end in time (it keeps running)."""

    kind = "timeout"


class ExecResult(BaseModel):
    exit_code: int | None
    signal: int | None = None
    stdout: str
    stderr: str
    truncated: bool = False


class GuestAgent:
    def __init__(self, socket: Path, name: str):
        self.socket = socket
        self.name = name
        self.lock = asyncio.Lock()

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run one agent command and return its ``return`` value.

        Raises :class:`AgentUnavailable` when the agent does not answer the sync in
        ``SYNC_TIMEOUT`` s, and :class:`QemuFailed` when it answers with an error.
        """
        async with self.lock:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.socket)), SYNC_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                raise AgentUnavailable(
                    f"the guest agent channel of '{self.name}' is not open: {exc}",
                    hint="is the VM running?",
                ) from exc
            try:
                await self._sync(reader, writer)
                message: dict[str, Any] = {"execute": command}
                if arguments:
                    message["arguments"] = arguments
                writer.write(json.dumps(message).encode() + b"\n")
                await writer.drain()
                if command in ("guest-shutdown",):
                    # Succeeds silently: the guest goes away instead of answering.
                    return None
                reply = await asyncio.wait_for(_read_json(reader), timeout)
            except TimeoutError as exc:
                raise AgentUnavailable(
                    f"the guest agent of '{self.name}' did not answer '{command}' in time",
                    hint="the guest may be busy or still booting; try again",
                ) from exc
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        if "error" in reply:
            error = reply["error"]
            raise QemuFailed(
                f"the guest agent refused '{command}': {error.get('desc', error)}",
                details={"class": error.get("class", "")},
            )
        return reply.get("return")

    async def _sync(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        token = random.randrange(1, 2**31)
        writer.write(b"\xff" + json.dumps(
            {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        ).encode() + b"\n")  # fmt: skip
        await writer.drain()
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                while True:
                    await reader.readuntil(b"\xff")
                    reply = await _read_json(reader)
                    if reply.get("return") == token:
                        return
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            raise AgentUnavailable(
                f"the guest agent of '{self.name}' does not answer",
                hint="the guest may still be booting, or runs no qemu-guest-agent",
            ) from exc

    async def exec(
        self,
        argv: list[str],
        *,
        input_data: bytes | None = None,
        timeout: float = 60.0,
        poll: float = EXEC_POLL,
    ) -> ExecResult:
        """Run ``argv`` in the guest (PATH is searched) and wait for it to end.

        Raises :class:`GuestCommandTimeout` when it runs longer than ``timeout`` s (it is
        left running in the guest: the agent cannot kill it).
        """
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if input_data is not None:
            args["input-data"] = base64.b64encode(input_data).decode()
        started = await self.call("guest-exec", args)
        pid = started["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = await self.call("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise GuestCommandTimeout(
                    f"'{argv[0]}' still runs in '{self.name}' after {timeout:g} s "
                    f"(guest pid {pid}; left running)",
                    hint="raise --timeout, or run it in the background in the guest",
                )
            await asyncio.sleep(poll)
        return ExecResult(
            exit_code=status.get("exitcode"),
            signal=status.get("signal"),
            stdout=_decode(status.get("out-data")),
            stderr=_decode(status.get("err-data")),
            truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
        )


async def _read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next JSON object on the stream (the agent ends each with a newline)."""
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        line = line.strip().lstrip(b"\xff")
        if not line:
            continue
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value


def _decode(data: str | None) -> str:
    return base64.b64decode(data).decode(errors="replace") if data else ""
