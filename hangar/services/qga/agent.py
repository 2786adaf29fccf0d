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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from hangar.errors import Conflict, QemuFailed
from hangar.host.sockets import open_unix_connection

SYNC_TIMEOUT = 5.0
EXEC_POLL = 0.1
# The longest reply line hangard reads. The guest writes what it likes: a longer line
# is refused (AgentMisbehaved), never buffered without end. qemu-ga caps a guest-exec's
# captured output at 16 MiB per stream; base64 makes that ~21.4 MiB.
MAX_REPLY = 48 * 1024 * 1024


class AgentUnavailable(Conflict):
    """The guest agent did not answer (not installed, not started yet, or hung)."""

    kind = "agent-unavailable"


class AgentMisbehaved(AgentUnavailable):
    """The guest agent's reply is not what its protocol says (too long, not JSON, wrong
    shape): the guest controls it, so it is refused like a missing agent."""

    kind = "agent-malformed"


def reply_object(value: object, command: str, name: str) -> dict[str, Any]:
    """``value`` (an agent command's return) if it is a JSON object, else refused."""
    if not isinstance(value, dict):
        raise AgentMisbehaved(
            f"the guest agent of '{name}' answered '{command}' with {type(value).__name__}, "
            "not an object",
            hint="the guest's qemu-guest-agent is broken or not genuine",
        )
    return value


def reply_text(obj: dict[str, Any], key: str, limit: int = 256) -> str | None:
    """A text field of an agent reply; None when absent or not text; cut at ``limit``."""
    value = obj.get(key)
    return value[:limit] if isinstance(value, str) else None


def reply_int(obj: dict[str, Any], key: str, command: str, name: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentMisbehaved(
            f"the guest agent of '{name}' answered '{command}' without an integer '{key}'",
            hint="the guest's qemu-guest-agent is broken or not genuine",
        )
    return value


class GuestCommandTimeout(Conflict):
    """A command run through the agent did not end in time (it keeps running)."""

    kind = "timeout"


class ExecResult(BaseModel):
    exit_code: int | None
    signal: int | None = None
    stdout: str
    stderr: str
    truncated: bool = False

    @classmethod
    def of(cls, status: dict[str, Any]) -> ExecResult:
        """From an ended program's ``guest-exec-status`` (the agent forgets it then).
        Fields of the wrong type read as absent; output that is not base64 is refused."""

        def number(key: str) -> int | None:
            value = status.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(
            exit_code=number("exitcode"),
            signal=number("signal"),
            stdout=_decode(status.get("out-data")),
            stderr=_decode(status.get("err-data")),
            truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
        )


class Caller(Protocol):
    name: str

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any: ...


class AgentSession:
    """One connection to the agent, synced once, for several commands in a row."""

    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.name = name
        self._reader = reader
        self._writer = writer

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run one agent command and return its ``return`` value. Raises
        :class:`AgentUnavailable` when it does not answer in ``timeout`` s, and
        :class:`QemuFailed` when it answers with an error."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            if command in ("guest-shutdown",):
                # Succeeds silently: the guest goes away instead of answering.
                return None
            reply = await asyncio.wait_for(_read_json(self._reader), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise AgentUnavailable(
                f"the guest agent of '{self.name}' did not answer '{command}' in time",
                hint="the guest may be busy or still booting; try again",
            ) from exc
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            desc = reply_text(error, "desc", 500) or "no description"
            raise QemuFailed(
                f"the guest agent refused '{command}': {desc}",
                details={"class": reply_text(error, "class") or ""},
            )
        return reply.get("return")


class GuestAgent:
    def __init__(self, socket: Path, name: str):
        self.socket = socket
        self.name = name
        self.lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AgentSession]:
        """A synced connection to the agent, held (and others kept waiting) until the
        block ends. Raises :class:`AgentUnavailable` when the agent does not answer
        the sync in ``SYNC_TIMEOUT`` s."""
        async with self.lock:
            try:
                reader, writer = await asyncio.wait_for(
                    open_unix_connection(self.socket, limit=MAX_REPLY), SYNC_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                raise AgentUnavailable(
                    f"the guest agent channel of '{self.name}' is not open: {exc}",
                    hint="is the VM running?",
                ) from exc
            try:
                await self._sync(reader, writer)
                yield AgentSession(self.name, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run one agent command on a connection of its own (see :class:`AgentSession`)."""
        async with self.session() as session:
            return await session.call(command, arguments, timeout=timeout)

    async def _sync(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        token = random.randrange(1, 2**31)
        writer.write(b"\xff" + json.dumps(
            {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        ).encode() + b"\n")  # fmt: skip
        await writer.drain()
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                while True:
                    try:
                        await reader.readuntil(b"\xff")
                    except asyncio.LimitOverrunError as exc:
                        # Junk before the sync's delimiter: drop it and read on.
                        await reader.readexactly(exc.consumed)
                        continue
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
        started = reply_object(await self.call("guest-exec", args), "guest-exec", self.name)
        pid = reply_int(started, "pid", "guest-exec", self.name)
        return await self.wait_exec(pid, argv[0], timeout=timeout, poll=poll)

    async def spawn(self, argv: list[str]) -> int:
        """Start ``argv`` in the guest with its output captured, without waiting: its
        guest pid (see :meth:`wait_exec`)."""
        args = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        started = reply_object(await self.call("guest-exec", args), "guest-exec", self.name)
        return reply_int(started, "pid", "guest-exec", self.name)

    async def wait_exec(
        self, pid: int, what: str, *, timeout: float = 60.0, poll: float = EXEC_POLL
    ) -> ExecResult:
        """See :func:`wait_exec`; each poll on a connection of its own."""
        return await wait_exec(self, pid, what, timeout=timeout, poll=poll)


async def wait_exec(
    agent: Caller, pid: int, what: str, *, timeout: float = 60.0, poll: float = EXEC_POLL
) -> ExecResult:
    """Wait for the program the agent started as ``pid`` (``what``: its name, for
    errors) to end; what it printed."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await agent.call("guest-exec-status", {"pid": pid})
        status = reply_object(reply, "guest-exec-status", agent.name)
        if status.get("exited"):
            return ExecResult.of(status)
        if time.monotonic() > deadline:
            raise GuestCommandTimeout(
                f"'{what}' still runs in '{agent.name}' after {timeout:g} s "
                f"(guest pid {pid}; left running)",
                hint="allow it a longer timeout, or run it in the background in the guest",
            )
        await asyncio.sleep(poll)


async def write_file(agent: Caller, path: str, data: bytes) -> None:
    """Write ``data`` to the guest file ``path`` (created or truncated) with the agent's
    own file calls: no program runs in the guest."""
    handle = await agent.call("guest-file-open", {"path": path, "mode": "w"})
    try:
        await agent.call(
            "guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(data).decode()}
        )
    finally:
        await agent.call("guest-file-close", {"handle": handle})


async def file_exists(agent: Caller, path: str) -> bool:
    """Whether the guest can open ``path`` for reading (the agent's own file calls)."""
    try:
        handle = await agent.call("guest-file-open", {"path": path, "mode": "r"})
    except QemuFailed:
        return False
    await agent.call("guest-file-close", {"handle": handle})
    return True


async def _read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next JSON object on the stream (the agent ends each with a newline)."""
    while True:
        try:
            line = await reader.readline()
        except ValueError as exc:  # asyncio: a line longer than the stream's limit
            raise AgentMisbehaved(
                f"the guest agent sent a reply longer than {MAX_REPLY >> 20} MiB",
                hint="the guest's qemu-guest-agent is broken or not genuine",
            ) from exc
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        line = line.strip().lstrip(b"\xff")
        if not line:
            continue
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value


def _decode(data: object) -> str:
    if not data:
        return ""
    try:
        if not isinstance(data, str):
            raise ValueError(type(data).__name__)
        return base64.b64decode(data, validate=True).decode(errors="replace")
    except ValueError as exc:  # binascii.Error is a ValueError
        raise AgentMisbehaved(
            "the guest agent sent program output that is not base64",
            hint="the guest's qemu-guest-agent is broken or not genuine",
        ) from exc
