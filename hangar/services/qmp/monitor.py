"""Thin typed wrappers over the ``qemu.qmp`` library's async client.

One :class:`Monitor` per running VM: QEMU's QMP socket takes one client at a
time, so hangard holds the connection and every QMP command goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket as _socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate
from qemu.qmp.message import Message

from hangar.errors import QemuFailed
from hangar.host.sockets import reachable_socket

log = logging.getLogger(__name__)

# How long QEMU that hung up before its greeting may take to be seen exited.
EXIT_GRACE = 1.0

EventHandler = Callable[[str, Mapping[str, Any]], Awaitable[None] | None]
EventMatch = Callable[[Mapping[str, Any]], bool]


def _data(event: Message) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


class EventWaiter:
    """Events named ``name`` whose data ``match`` accepts, from the moment the waiter
    was made (see :meth:`Monitor.expect`)."""

    def __init__(self, client: QMPClient, name: str, match: EventMatch | None):
        self.name = name
        self._client = client
        self.listener = EventListener(
            name, None if match is None else (lambda event: match(_data(event)))
        )

    async def get(self, within: float) -> Mapping[str, Any] | None:
        """The next such event's data, or None when none comes within ``within`` seconds.

        Raises :class:`QemuFailed` when the connection ends first (QEMU exited): no
        event can come then.
        """
        if not self.listener.empty():
            return _data(await self.listener.get())
        event = asyncio.ensure_future(self.listener.get())
        gone = asyncio.ensure_future(self._gone())
        try:
            await asyncio.wait({event, gone}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (event, gone):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if event.done() and not event.cancelled():
            return _data(event.result())
        if gone.done() and not gone.cancelled():
            raise QemuFailed(f"QEMU exited while hangar waited for its {self.name} event")
        return None

    async def wait(self, timeout: float) -> Mapping[str, Any]:
        """The next such event's data; :class:`QemuFailed` naming the event when none
        comes within ``timeout`` seconds or QEMU exits first."""
        data = await self.get(timeout)
        if data is None:
            raise QemuFailed(f"QEMU sent no {self.name} event in {timeout:g} s")
        return data

    async def _gone(self) -> None:
        while self._client.runstate == Runstate.RUNNING:
            await self._client.runstate_changed()


class Monitor:
    def __init__(self, name: str):
        self._client = QMPClient(name)
        # qemu.qmp logs every disconnect at ERROR level; QEMU exiting is normal here.
        logging.getLogger("qemu.qmp.protocol").setLevel(logging.CRITICAL)
        self._events_task: asyncio.Task[None] | None = None
        self._handler: EventHandler | None = None

    async def attach(
        self, sock: _socket.socket, *, timeout: float, alive: Callable[[], bool]
    ) -> None:
        """Speak QMP over ``sock``: hangard's connection to the listening socket it
        handed QEMU (process.QmpSockets), made before QEMU ran. Takes ``sock`` over.

        The kernel holds the connection until QEMU accepts it; QEMU's greeting comes
        when its main loop runs, so there is nothing to poll for. ``alive`` tells
        whether QEMU is still running. Raises :class:`QemuFailed` when QEMU exits
        first (its end of the connection then closes) or ``timeout`` seconds pass.
        """
        await self._greet(sock, "", timeout=timeout, alive=alive)

    async def connect(self, socket: Path, *, timeout: float, alive: Callable[[], bool]) -> None:
        """Connect to the QMP socket at ``socket``, never through a link, as a
        restarted hangard does (Supervisor.adopt): the QEMU runs already and the
        socket was bound before QEMU started, so one attempt is enough.

        ``alive`` tells whether QEMU is still running. Raises :class:`QemuFailed`
        when there is no socket, it refuses, QEMU exits first or ``timeout``
        seconds pass.
        """
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            with reachable_socket(socket) as target:
                await asyncio.wait_for(
                    asyncio.get_running_loop().sock_connect(sock, target), timeout
                )
        except (OSError, TimeoutError) as exc:
            sock.close()
            if not alive():
                raise QemuFailed("QEMU exited before its QMP socket answered") from exc
            raise QemuFailed(f"QEMU's QMP socket {socket} did not answer: {exc}") from exc
        await self._greet(sock, f" {socket}", timeout=timeout, alive=alive)

    async def _greet(
        self, sock: _socket.socket, where: str, *, timeout: float, alive: Callable[[], bool]
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._client.connect(sock)
            return
        except TimeoutError:
            sock.close()
            if alive():
                raise QemuFailed(
                    f"QEMU's QMP socket{where} did not answer in {timeout:g} s"
                ) from None
            raise QemuFailed("QEMU exited before its QMP socket answered") from None
        except (QMPError, OSError, EOFError) as exc:
            sock.close()
            failure: BaseException = exc
        # QEMU hung up before its greeting: it is exiting. A supervised QEMU's exit
        # status is written before its end closes; a direct child may not be reaped
        # yet: give ``alive`` a moment to say so (this path is a failure only).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, EXIT_GRACE)
        while alive() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if not alive():
            raise QemuFailed("QEMU exited before its QMP socket answered") from failure
        raise QemuFailed(
            f"QEMU hung up its QMP socket{where} before answering ({failure})"
        ) from failure

    def on_event(self, handler: EventHandler) -> None:
        """Call ``handler(name, data)`` for every QMP event until the connection closes."""

        async def pump() -> None:
            async for event in self._client.events:
                await self._deliver(event)

        self._handler = handler
        self._events_task = asyncio.create_task(pump())

    @contextlib.asynccontextmanager
    async def expect(
        self, name: str, match: EventMatch | None = None
    ) -> AsyncIterator[EventWaiter]:
        """Wait for QEMU's event ``name`` (with data ``match`` accepts) caused by what the
        block sends::

            async with monitor.expect("DEVICE_DELETED", lambda d: d.get("device") == i) as gone:
                await monitor.execute("device_del", {"id": i})
                await gone.wait(20)

        The waiter listens from the start of the block, before the command is sent,
        so an event QEMU sends before (or with) the command's reply is not missed.
        It sees events beside the handler of :meth:`on_event`, which gets them too.
        """
        waiter = EventWaiter(self._client, name, match)
        self._client.register_listener(waiter.listener)
        try:
            yield waiter
        finally:
            self._client.remove_listener(waiter.listener)

    async def _deliver(self, event: Mapping[str, Any]) -> None:
        if self._handler is None:
            return
        try:
            data = event.get("data")
            result = self._handler(str(event["event"]), data if isinstance(data, dict) else {})
            if result is not None:
                await result
        except Exception:
            log.exception("QMP event handler failed")

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        try:
            return await self._client.execute(command, arguments)
        except ExecuteError as exc:
            raise QemuFailed(f"QMP {command} failed: {exc}") from exc
        except (QMPError, OSError, EOFError) as exc:
            raise QemuFailed(f"QMP {command} failed: QEMU is not answering ({exc})") from exc

    async def send_fd(self, name: str, fd: int) -> None:
        """Pass ``fd`` to QEMU over the QMP socket (SCM_RIGHTS) and name it ``name``
        (``getfd``): QEMU then reads or writes a file hangard opened, with no shell."""
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError) as exc:
            raise QemuFailed(f"passing a file to QEMU failed: {exc}") from exc
        await self.execute("getfd", {"fdname": name})

    @contextlib.asynccontextmanager
    async def file_for_qemu(
        self, path: os.PathLike[str] | str, *, writable: bool = True
    ) -> AsyncIterator[str]:
        """Open ``path`` for QEMU; yields the name QEMU opens it by (``/dev/fdset/N``).

        A sandboxed QEMU cannot open files outside its VM's folders (a volume being
        hot-plugged, a fork's target in the image store): hangard opens the file and
        passes the descriptor (``add-fd``). Use the name in the blockdev-add inside the
        block: on leaving it the set is released (``remove-fd``) and QEMU closes the
        descriptor once no node uses it.
        """
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            try:
                self._client.send_fd_scm(fd)
            except (QMPError, OSError) as exc:
                raise QemuFailed(f"passing a file to QEMU failed: {exc}") from exc
            info = await self.execute("add-fd", {"opaque": str(path)})
        finally:
            os.close(fd)
        fdset = int(info["fdset-id"])
        try:
            yield f"/dev/fdset/{fdset}"
        finally:
            with contextlib.suppress(QemuFailed):
                await self.execute("remove-fd", {"fdset-id": fdset})

    async def status(self) -> str:
        """QEMU's run state: 'running', 'paused', 'prelaunch', 'shutdown', ..."""
        reply = cast(dict[str, Any], await self.execute("query-status"))
        return str(reply["status"])

    async def cont(self) -> None:
        await self.execute("cont")

    async def stop(self) -> None:
        await self.execute("stop")

    async def powerdown(self) -> None:
        """Press the ACPI power button."""
        await self.execute("system_powerdown")

    async def quit(self) -> None:
        """Ask QEMU to exit now (it flushes its disks first)."""
        # QEMU may close the socket before the reply arrives: that is success.
        with contextlib.suppress(QemuFailed):
            await self.execute("quit")

    async def close(self, *, drain: float = 0.0) -> None:
        """Disconnect. With ``drain``, first wait up to that long for QEMU to hang up.

        QEMU sends SHUTDOWN just before it exits; draining makes sure such last
        events reach the handler before the connection is dropped.
        """
        if drain:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    while self._client.runstate == Runstate.RUNNING:
                        await self._client.runstate_changed()
            # The pump may hold an event it has taken off the queue but not yet
            # handled; cancelling it now would lose that event. Let it run first.
            for _ in range(5):
                await asyncio.sleep(0)
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._events_task
        if drain:
            for event in self._client.events.clear():
                await self._deliver(event)
        with contextlib.suppress(Exception):
            await self._client.disconnect()
