"""A fake QEMU QMP server for tests: real wire protocol, emulated VM run state.

It listens on a unix socket and speaks QMP as QEMU 7.2 does (transcripts of a
real ``qemu-system-x86_64 -S -qmp unix:...`` session were the reference): the
greeting, ``qmp_capabilities`` negotiation, ``{"return": ...}`` and
``{"error": {"class": ..., "desc": ...}}`` replies carrying the client's
``id``, and timestamped events. The fake writes one JSON object per
``\\r\\n``-terminated line, as QEMU does, and reads a JSON stream (no framing).
Spec: https://www.qemu.org/docs/master/interop/qmp-spec.html

Behind the socket it emulates the run state of one VM::

    prelaunch --cont--> running --stop--> paused --cont--> running
    running --system_powerdown + obedient guest--> (exit) | shutdown
    any --quit--> (exit);  any --system_reset--> running or prelaunch

Tests drive it (``fail_next``, ``hang_next``, ``emit_event``, ``crash``,
``guest_shutdown``) and assert on what it received (``commands``) and sent
(``events``). It also emulates device unplug (``devices``, DEVICE_DELETED), block
jobs (``jobs``, JOB_STATUS_CHANGE) and saving by migration (``migration``,
MIGRATION): see fake_qmp_devices.py. Usage::

    async with FakeQMPServer(path, paused=True) as fake:
        ...  # connect a client to `path`
        assert fake.command_names()[-1] == "cont"

Like QEMU's QMP chardev it serves one client at a time: a second connection
gets its greeting only once the first client has gone. Each new connection
starts a fresh session (greeting, negotiation), while the VM state persists.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import inspect
import json
import os
import socket
import struct
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from tests.support.fake_qmp_devices import (
    Devices,
    Jobs,
    Migration,
    QMPCommandError,
)

RunStatus = Literal["prelaunch", "running", "paused", "shutdown", "postmigrate", "inmigrate"]

#: A custom command handler: gets the command's arguments, returns the value
#: for ``"return"`` (or an awaitable of it), or raises `QMPCommandError`.
Handler = Callable[[dict[str, Any]], Any | Awaitable[Any]]

_DEFAULT_PACKAGE = "Debian 1:7.2+dfsg-7+deb12u18"

# Argument names of the built-in commands: (required, optional). QEMU rejects
# unknown and missing arguments, and so must the fake, or a client sending a
# misspelled argument would pass tests here and fail on real QEMU.
_BUILTIN_ARGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "qmp_capabilities": (frozenset(), frozenset({"enable"})),
    "query-status": (frozenset(), frozenset()),
    "query-version": (frozenset(), frozenset()),
    "query-commands": (frozenset(), frozenset()),
    "stop": (frozenset(), frozenset()),
    "cont": (frozenset(), frozenset()),
    "system_powerdown": (frozenset(), frozenset()),
    "system_reset": (frozenset(), frozenset()),
    "quit": (frozenset(), frozenset()),
    "human-monitor-command": (frozenset({"command-line"}), frozenset({"cpu-index"})),
    # QEMU 7.1+: format png.
    "screendump": (frozenset({"filename"}), frozenset({"device", "head", "format"})),
    # device_add takes the driver's properties too: checked by Devices.add.
    "device_del": (frozenset({"id"}), frozenset()),
    "blockdev-backup": (
        frozenset({"device", "target", "sync"}),
        frozenset(
            {
                "job-id",
                "speed",
                "bitmap",
                "bitmap-mode",
                "compress",
                "on-source-error",
                "on-target-error",
                "auto-finalize",
                "auto-dismiss",
                "filter-node-name",
                "x-perf",
            }
        ),
    ),
    "query-jobs": (frozenset(), frozenset()),
    "job-cancel": (frozenset({"id"}), frozenset()),
    "job-dismiss": (frozenset({"id"}), frozenset()),
    "getfd": (frozenset({"fdname"}), frozenset()),
    "migrate-set-capabilities": (frozenset({"capabilities"}), frozenset()),
    "migrate": (frozenset({"uri"}), frozenset({"blk", "inc", "detach", "resume"})),
    "migrate-incoming": (frozenset({"uri"}), frozenset()),
    "migrate_cancel": (frozenset(), frozenset()),
    "query-migrate": (frozenset(), frozenset()),
}
# Commands whose arguments their emulation checks itself.
_OPEN_ARGS = frozenset({"device_add", "migrate-set-parameters"})


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    raw = b"".join(b"\x00" + row for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


TINY_PNG = _png(2, 1, [b"\x00\xff"])


@dataclass(frozen=True)
class RecordedCommand:
    """One command as the fake received it (rejected ones included)."""

    name: str
    arguments: dict[str, Any]
    id: Any = None


@dataclass
class _Session:
    """One client connection: its stream and its negotiation state."""

    writer: asyncio.StreamWriter
    negotiated: bool = False
    oob: bool = False
    #: Set when the fake hangs up this connection (exit, crash, close).
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, msg: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            # One write per message, so events from timers never interleave
            # with a reply mid-line.
            self.writer.write(json.dumps(msg).encode() + b"\r\n")


@dataclass
class _Injected:
    failures: dict[str, deque[QMPCommandError]] = field(default_factory=dict)
    hangs: dict[str, int] = field(default_factory=dict)


class FakeQMPServer:
    """An asyncio QMP server on a unix socket that behaves like QEMU 7.2.

    Args:
        path: where to create the socket (must not be longer than ~107 bytes).
        paused: start in ``prelaunch`` like ``qemu -S``; otherwise ``running``.
        guest_obeys_powerdown: whether the guest answers ``system_powerdown``
            by shutting down (after ``powerdown_delay`` seconds of running).
        powerdown_delay: how long the obedient guest takes to shut down.
        no_shutdown: like ``qemu -no-shutdown``: a guest shutdown leaves the
            VM in ``shutdown`` state instead of ending the process.
        incoming: like ``qemu -incoming defer``: the VM waits in ``inmigrate`` for
            ``migrate-incoming`` to load it (then paused, with ``paused``).
        version: QEMU version (major, minor, micro) in greeting/query-version.
        package: QEMU package string in greeting/query-version.
        listening: serve on this socket, bound and listening already (QEMU's
            ``-chardev socket,fd=N,server=on``), instead of binding ``path``;
            ``path`` is then where it is bound.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        paused: bool = False,
        guest_obeys_powerdown: bool = True,
        powerdown_delay: float = 0.05,
        no_shutdown: bool = False,
        incoming: bool = False,
        version: tuple[int, int, int] = (7, 2, 0),
        package: str = _DEFAULT_PACKAGE,
        listening: socket.socket | None = None,
    ) -> None:
        self.path = Path(path)
        self._listening = listening
        self.guest_obeys_powerdown = guest_obeys_powerdown
        self.powerdown_delay = powerdown_delay
        self.no_shutdown = no_shutdown
        self.version = version
        self.package = package
        #: Every command received, in order, with its arguments.
        self.commands: list[RecordedCommand] = []
        #: Every event emitted, in order (also those no client was there for).
        self.events: list[dict[str, Any]] = []
        #: Exceptions raised by custom handlers (other than QMPCommandError);
        #: the client got a GenericError, the test can look here for the bug.
        self.handler_errors: list[BaseException] = []
        #: Output for ``human-monitor-command`` command lines, set by tests.
        self.hmp_outputs: dict[str, str] = {}
        #: Forwards added with HMP hostfwd_add: (netdev, PROTO:HOSTADDR:HOSTPORT).
        self.hostfwds: set[tuple[str, str]] = set()
        self._status: RunStatus = "prelaunch" if paused else "running"
        self._autostart = not paused
        if incoming:
            self._status = "inmigrate"
        self._handlers: dict[str, Handler] = {}
        self._injected = _Injected()
        self._server: asyncio.Server | None = None
        self._session: _Session | None = None
        self._connections = 0
        # QEMU's chardev serves one client; the others wait for this.
        self._one_client = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._powerdown_pending = False
        self._guest_timer: asyncio.Task[None] | None = None
        self._exited = False
        self._crashed = False
        self._changed = asyncio.Event()
        #: Device unplug: ``devices.devices`` (id -> driver), ``devices.unplug_delay``.
        self.devices = Devices(self.emit_event, self._spawn)
        #: Block jobs: ``jobs.hold_jobs``, ``jobs.finish_job``, ``jobs.fail_next_job``.
        self.jobs = Jobs(self.emit_event, self._spawn)
        #: Migration: ``hold_migration``, ``finish_migration``, ``fail_next_migration``.
        self.migration = Migration(
            self.emit_event, self._spawn, self._migrated, self._loaded if incoming else None
        )

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the socket and start accepting clients."""
        # Bind ourselves rather than pass a path, so closing never unlinks the
        # socket behind our back (Python 3.13 would); crash() relies on that.
        # QEMU unlinks whatever is at the path before binding; the fake only
        # removes a (stale) socket, never a file a test put there by mistake.
        if self._listening is not None:
            sock = self._listening
        else:
            if self.path.is_socket():
                self.path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(os.fspath(self.path))
                sock.listen(8)
            except BaseException:
                sock.close()
                raise
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=1 << 20)

    async def close(self) -> None:
        """Stop everything and remove the socket. Idempotent."""
        self._stop_guest_timer()
        await self._stop_serving(abort=False)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # -- what tests look at ------------------------------------------------

    @property
    def status(self) -> RunStatus:
        """The VM's run state, as ``query-status`` would report it."""
        return self._status

    @property
    def running(self) -> bool:
        return self._status == "running"

    @property
    def connected(self) -> bool:
        """Whether a client is connected (negotiated or not)."""
        return self._session is not None

    @property
    def connections(self) -> int:
        """How many clients have been served (greeted) so far."""
        return self._connections

    @property
    def exited(self) -> bool:
        """Whether the emulated QEMU process is gone (quit, shutdown, crash)."""
        return self._exited

    @property
    def crashed(self) -> bool:
        return self._crashed

    def command_names(self) -> list[str]:
        return [c.name for c in self.commands]

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def wait_for_command(
        self, name: str, *, count: int = 1, timeout: float = 5.0
    ) -> RecordedCommand:
        """Wait until `name` has been received `count` times; return that one.

        Raises TimeoutError after `timeout` seconds.
        """

        def matching() -> list[RecordedCommand]:
            return [c for c in self.commands if c.name == name]

        await self._wait_until(lambda: len(matching()) >= count, timeout)
        return matching()[count - 1]

    async def wait_connected(self, *, timeout: float = 5.0) -> None:
        await self._wait_until(lambda: self.connected, timeout)

    async def wait_exited(self, *, timeout: float = 5.0) -> None:
        await self._wait_until(lambda: self._exited, timeout)

    # -- what tests inject ---------------------------------------------------

    def fail_next(self, command: str, error_class: str = "GenericError", desc: str = "") -> None:
        """Answer the next `command` with an error instead of running it.

        Calls queue up: two calls fail the next two invocations.
        """
        err = QMPCommandError(error_class, desc or f"injected failure of {command}")
        self._injected.failures.setdefault(command, deque()).append(err)

    def hang_next(self, command: str) -> None:
        """Never answer the next `command`, like a QEMU whose main loop is stuck.

        Commands after it on the same connection stay unanswered too (QEMU
        handles them in order); events still flow.
        """
        self._injected.hangs[command] = self._injected.hangs.get(command, 0) + 1

    def set_handler(self, command: str, handler: Handler) -> None:
        """Serve `command` (new or built-in) with `handler`."""
        self._handlers[command] = handler

    def emit_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to the client, if one is connected and negotiated."""
        now = time.time()
        msg: dict[str, Any] = {
            "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1_000_000)},
            "event": name,
        }
        # QEMU omits "data" for events that have none (STOP, RESUME, ...).
        if data is not None:
            msg["data"] = data
        self.events.append(msg)
        # QEMU sends no events to a monitor still negotiating capabilities.
        if self._session is not None and self._session.negotiated:
            self._session.send(msg)
        self._notify()

    def guest_shutdown(self) -> None:
        """The guest powers itself off (ACPI shutdown from inside)."""
        self._powerdown_pending = False
        self._stop_guest_timer()
        self.emit_event("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
        if self.no_shutdown:
            self.emit_event("STOP")
            self._set_status("shutdown")
        else:
            self._exit()

    def host_signal(self) -> None:
        """QEMU got SIGTERM/SIGINT/SIGHUP: it reports it and exits."""
        self._stop_guest_timer()
        self.emit_event("SHUTDOWN", {"guest": False, "reason": "host-signal"})
        self._exit()

    def guest_reset(self) -> None:
        """The guest reboots itself."""
        self._powerdown_pending = False
        self._stop_guest_timer()
        self.emit_event("RESET", {"guest": True, "reason": "guest-reset"})

    async def crash(self) -> None:
        """Die like a killed QEMU: drop the connection, stop listening.

        The socket file stays behind, stale, as it does when QEMU is killed:
        connecting to it is refused.
        """
        self._crashed = True
        self._exited = True
        self._stop_guest_timer()
        await self._stop_serving(abort=True)
        if not self.path.exists():
            # Keep the stale file even if asyncio removed it on close.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
                stale.bind(os.fspath(self.path))
        self._notify()

    # -- serving -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with self._one_client:
                if self._exited:
                    return
                await self._session_loop(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to report
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _session_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = _Session(writer)
        self._session = session
        self._connections += 1
        self._notify()
        try:
            session.send({"QMP": {"version": self._version(), "capabilities": ["oob"]}})
            splitter = _JSONSplitter()
            while not self._exited:
                data = await reader.read(65536)
                if not data:
                    return
                for text in splitter.feed(data):
                    msg = self._parse(session, text)
                    if msg is not None:
                        await self._dispatch(session, msg)
                    if self._exited:
                        return
        finally:
            if self._session is session:
                self._session = None
            self._notify()

    def _parse(self, session: _Session, text: str) -> dict[str, Any] | None:
        """Decode one JSON value; answer malformed ones like QEMU does."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            # QEMU reports parse errors without an id (it cannot know it).
            session.send(_error("GenericError", f"JSON parse error, {err.msg}"))
            return None
        if not isinstance(value, dict):
            session.send(_error("GenericError", "QMP input must be a JSON object"))
            return None
        return value

    async def _dispatch(self, session: _Session, msg: dict[str, Any]) -> None:
        has_id = "id" in msg
        msg_id = msg.get("id")

        def reply_error(error_class: str, desc: str) -> None:
            err = _error(error_class, desc)
            # Real QEMU puts "id" first in errors and last in returns.
            session.send({"id": msg_id, **err} if has_id else err)

        # Envelope checks, in QEMU's order and wording.
        allowed = {"execute", "arguments", "id"} | ({"exec-oob"} if session.oob else set())
        for key in msg:
            if key not in allowed:
                reply_error("GenericError", f"QMP input member '{key}' is unexpected")
                return
        name = msg.get("execute", msg.get("exec-oob"))
        if name is None:
            reply_error("GenericError", "QMP input lacks member 'execute'")
            return
        if not isinstance(name, str):
            reply_error("GenericError", "QMP input member 'execute' must be a string")
            return
        args = msg.get("arguments", {})
        if not isinstance(args, dict):
            reply_error("GenericError", "QMP input member 'arguments' must be an object")
            return
        self.commands.append(RecordedCommand(name, dict(args), msg_id))
        self._notify()
        if "exec-oob" in msg:
            reply_error("GenericError", f"The command {name} does not support OOB")
            return

        if not session.negotiated and name != "qmp_capabilities":
            reply_error(
                "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"
            )
            return
        if session.negotiated and name == "qmp_capabilities":
            reply_error(
                "CommandNotFound", "Capabilities negotiation is already complete, command ignored"
            )
            return

        if self._injected.hangs.get(name, 0) > 0:
            self._injected.hangs[name] -= 1
            await session.closed.wait()  # until the fake exits, crashes or closes
            return
        failures = self._injected.failures.get(name)
        if failures:
            err = failures.popleft()
            reply_error(err.error_class, err.desc)
            return

        try:
            result = await self._run(session, name, args)
        except QMPCommandError as err:
            reply_error(err.error_class, err.desc)
            return
        except Exception as err:  # a bug in a test's handler: report, don't die
            self.handler_errors.append(err)
            reply_error("GenericError", f"fake handler for {name} raised {err!r}")
            return
        reply: dict[str, Any] = {"return": result}
        if has_id:
            reply["id"] = msg_id
        session.send(reply)
        if name == "quit":
            # QEMU sends SHUTDOWN and the reply, then exits.
            self._exit()

    async def _run(self, session: _Session, name: str, args: dict[str, Any]) -> Any:
        handler = self._handlers.get(name)
        if handler is not None:
            result = handler(args)
            if inspect.isawaitable(result):
                result = await result
            return result
        if name in _OPEN_ARGS:
            return self._open_command(name, args)
        if name not in _BUILTIN_ARGS:
            raise QMPCommandError("CommandNotFound", f"The command {name} has not been found")
        required, optional = _BUILTIN_ARGS[name]
        for arg in args:
            if arg not in required | optional:
                raise QMPCommandError("GenericError", f"Parameter '{arg}' is unexpected")
        for arg in sorted(required):
            if arg not in args:
                raise QMPCommandError("GenericError", f"Parameter '{arg}' is missing")
        return getattr(self, "_cmd_" + name.replace("-", "_"))(session, args)

    # -- built-in commands ---------------------------------------------------

    def _open_command(self, name: str, args: dict[str, Any]) -> Any:
        if name == "device_add":
            if "driver" not in args:
                raise QMPCommandError("GenericError", "Parameter 'driver' is missing")
            return self.devices.add(args)
        return self.migration.set_parameters(args)

    def _cmd_device_del(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.devices.delete(args)

    def _cmd_blockdev_backup(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.jobs.backup(args)

    def _cmd_query_jobs(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.jobs.query(args)

    def _cmd_job_cancel(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.jobs.cancel(args)

    def _cmd_job_dismiss(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.jobs.dismiss(args)

    def _cmd_getfd(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.migration.getfd(args)

    def _cmd_migrate_set_capabilities(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.migration.set_capabilities(args)

    def _cmd_migrate(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.migration.migrate(args)

    def _cmd_migrate_incoming(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.migration.incoming(args)

    def _cmd_migrate_cancel(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.migration.cancel(args)

    def _cmd_query_migrate(self, session: _Session, args: dict[str, Any]) -> Any:
        return self.migration.query(args)

    def _cmd_qmp_capabilities(self, session: _Session, args: dict[str, Any]) -> Any:
        enable = args.get("enable", [])
        for cap in enable:
            if cap != "oob":
                # Verbatim QEMU 7.2 wording, odd as it is.
                raise QMPCommandError(
                    "GenericError", f"Parameter 'null' does not accept value '{cap}'"
                )
        session.oob = "oob" in enable
        session.negotiated = True
        return {}

    def _cmd_query_status(self, session: _Session, args: dict[str, Any]) -> Any:
        return {"status": self._status, "singlestep": False, "running": self.running}

    def _cmd_query_version(self, session: _Session, args: dict[str, Any]) -> Any:
        return self._version()

    def _cmd_query_commands(self, session: _Session, args: dict[str, Any]) -> Any:
        names = sorted(set(_BUILTIN_ARGS) | _OPEN_ARGS | set(self._handlers))
        return [{"name": n} for n in names]

    def _cmd_stop(self, session: _Session, args: dict[str, Any]) -> Any:
        # Stopping a VM that is not running changes nothing and emits nothing.
        if self.running:
            self._set_status("paused")
            self._stop_guest_timer()
            self.emit_event("STOP")
        return {}

    def _cmd_cont(self, session: _Session, args: dict[str, Any]) -> Any:
        if self._status == "shutdown":
            raise QMPCommandError("GenericError", "Resetting the Virtual Machine is required")
        if not self.running:
            self.emit_event("RESUME")
            self._set_status("running")
            if self._powerdown_pending:
                # The ACPI button press waited for the guest to run again.
                self._start_guest_timer()
        return {}

    def _cmd_system_powerdown(self, session: _Session, args: dict[str, Any]) -> Any:
        self.emit_event("POWERDOWN")
        if self.guest_obeys_powerdown:
            self._powerdown_pending = True
            if self.running:
                self._start_guest_timer()
        return {}

    def _cmd_system_reset(self, session: _Session, args: dict[str, Any]) -> Any:
        self.emit_event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        self._powerdown_pending = False
        self._stop_guest_timer()
        # QEMU: a reset VM that was not running goes (back) to prelaunch.
        if not self.running:
            self._set_status("prelaunch")
        return {}

    def _cmd_quit(self, session: _Session, args: dict[str, Any]) -> Any:
        self._stop_guest_timer()
        self.emit_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        return {}

    def _cmd_screendump(self, session: _Session, args: dict[str, Any]) -> Any:
        # A 2x1 PNG (one black, one white pixel), written where QEMU would write it.
        if args.get("format") != "png":
            raise QMPCommandError("GenericError", "fake: only png screendumps")
        Path(str(args["filename"])).write_bytes(TINY_PNG)
        return {}

    def _cmd_human_monitor_command(self, session: _Session, args: dict[str, Any]) -> Any:
        line = str(args["command-line"]).strip()
        if line in self.hmp_outputs:
            return self.hmp_outputs[line]
        if line == "info status":
            shown = {
                "running": "running",
                "paused": "paused",
                "prelaunch": "paused (prelaunch)",
                "shutdown": "paused (shutdown)",
            }[self._status]
            return f"VM status: {shown}\r\n"
        if line == "info version":
            major, minor, micro = self.version
            return f"{major}.{minor}.{micro} ({self.package})\r\n"
        words = line.split()
        if words[:1] == ["hostfwd_add"] and len(words) == 3:
            return self._hostfwd_add(words[1], words[2])
        if words[:1] == ["hostfwd_remove"] and len(words) == 3:
            # QEMU 7.2 prints the outcome either way.
            found = (words[1], words[2]) in self.hostfwds
            self.hostfwds.discard((words[1], words[2]))
            return f"host forwarding rule for {words[2]} {'removed' if found else 'not found'}\r\n"
        word = words[0] if words else ""
        return f"unknown command: '{word}'\r\n"

    def _hostfwd_add(self, netdev: str, rule: str) -> str:
        # Silent on success; a host port already forwarded cannot be bound again.
        host = rule.split("-", 1)[0]
        if (netdev, host) in self.hostfwds:
            return f"Could not set up host forwarding rule '{rule}'\r\n"
        self.hostfwds.add((netdev, host))
        return ""

    # -- internals -----------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (a guest ack, a job, a migration) beside the session."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _loaded(self, ok: bool) -> None:
        if not ok:
            self._exit()  # QEMU 7.2 exits when an incoming migration fails
        elif self._autostart:
            self.emit_event("RESUME")
            self._set_status("running")
        else:
            self._set_status("paused")

    def _migrated(self) -> None:
        # QEMU stops a running source VM at the end; either way it is 'postmigrate'.
        if self.running:
            self._stop_guest_timer()
            self.emit_event("STOP")
        self._set_status("postmigrate")

    def _version(self) -> dict[str, Any]:
        major, minor, micro = self.version
        return {
            "qemu": {"micro": micro, "minor": minor, "major": major},
            "package": self.package,
        }

    def _set_status(self, status: RunStatus) -> None:
        self._status = status
        self._notify()

    def _start_guest_timer(self) -> None:
        self._stop_guest_timer()
        self._guest_timer = asyncio.get_running_loop().create_task(self._guest_obeys())
        self._tasks.add(self._guest_timer)
        self._guest_timer.add_done_callback(self._tasks.discard)

    def _stop_guest_timer(self) -> None:
        timer, self._guest_timer = self._guest_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _guest_obeys(self) -> None:
        await asyncio.sleep(self.powerdown_delay)
        # Only a running guest acts; a paused one resumes the timer on cont.
        if self.running and self._powerdown_pending and not self._exited:
            self._guest_timer = None
            self.guest_shutdown()

    def _exit(self) -> None:
        """The QEMU process ends cleanly: flush, hang up, remove the socket."""
        self._exited = True
        if self._session is not None:
            self._session.closed.set()
            self._session.writer.close()
        if self._server is not None:
            self._server.close()
            self._server = None
        # QEMU unlinks its QMP socket on a clean exit.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._notify()

    async def _stop_serving(self, *, abort: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        session = self._session
        if session is not None:
            session.closed.set()
            if abort:
                # No flush, no orderly close: what a killed process leaves.
                session.writer.transport.abort()
            else:
                session.writer.close()
        if server is not None:
            await server.wait_closed()

    def _notify(self) -> None:
        # Wake every waiter; each re-checks its own condition.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()


class _JSONSplitter:
    """Cuts a byte stream into top-level JSON texts.

    QMP is a stream of JSON values, not of lines: qemu.qmp sends its
    commands with no newline at all, so framing must follow brackets and
    strings, as QEMU's own JSON streamer does.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf: list[str] = []
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        for ch in self._decoder.decode(data):
            if self._in_string:
                self._buf.append(ch)
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
                    if self._depth == 0:  # a bare top-level string
                        out.append(self._take())
                continue
            if ch.isspace() and self._depth == 0:
                if self._buf:  # end of a bare top-level scalar
                    out.append(self._take())
                continue
            self._buf.append(ch)
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth <= 0:  # complete value, or a stray closer
                    out.append(self._take())
        return out

    def _take(self) -> str:
        text = "".join(self._buf)
        self._buf.clear()
        self._depth = 0
        return text


def _error(error_class: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": error_class, "desc": desc}}
