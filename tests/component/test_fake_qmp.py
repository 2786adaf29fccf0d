"""The fake QMP server, driven by the real qemu.qmp client (and raw sockets).

If these pass, code tested against the fake talks the protocol real QEMU
talks; the raw-socket cases pin details (ids, key order, \\r\\n, error
wording) to a transcript of a real QEMU 7.2 session.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecInterruptedError, ExecuteError, QMPClient
from qemu.qmp.protocol import Runstate

from tests.support.fake_qmp import FakeQMPServer, QMPCommandError, RecordedCommand

WAIT = 5.0  # generous bound for things that must happen; never asserted on


@pytest.fixture
def sock() -> Iterator[Path]:
    # Short path under /tmp: unix socket paths must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="hq-", dir="/tmp"))
    yield folder / "qmp.sock"
    shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def qmp(path: Path) -> AsyncIterator[QMPClient]:
    client = QMPClient("test")
    await client.connect(str(path))
    try:
        yield client
    finally:
        # After a hang-up the client re-raises the EOF here; that is tested
        # explicitly where it matters.
        with suppress(EOFError, OSError):
            await client.disconnect()


async def next_event(client: QMPClient) -> dict[str, Any]:
    event = await asyncio.wait_for(client.events.get(), WAIT)
    return dict(event)


class RawClient:
    """A bare-socket QMP client, to see the exact bytes the fake sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), WAIT)

    async def recv(self) -> dict[str, Any]:
        msg = json.loads(await self.line())
        assert isinstance(msg, dict)
        return msg

    async def send(self, text: str) -> None:
        self.writer.write(text.encode())
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


# -- negotiation and wire format ------------------------------------------


async def test_greeting_and_negotiation_through_qemu_qmp(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        assert client.greeting is not None
        greeting = client.greeting.QMP
        assert greeting.version["qemu"] == {"micro": 0, "minor": 2, "major": 7}
        assert list(greeting.capabilities) == ["oob"]
        # qemu.qmp enables oob because the greeting offers it.
        assert fake.commands[0] == RecordedCommand("qmp_capabilities", {"enable": ["oob"]})
        version = await client.execute("query-version")
        assert isinstance(version, dict)
        assert version["qemu"]["major"] == 7
        assert version["package"] == fake.package


async def test_wire_format_matches_real_qemu(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True):
        raw = await RawClient.open(sock)
        greeting = await raw.line()
        assert greeting.endswith(b"}}\r\n")
        assert json.loads(greeting)["QMP"]["capabilities"] == ["oob"]

        # Commands before negotiation are refused, id echoed first.
        await raw.send('{"execute": "query-status", "id": "a"}')
        assert await raw.line() == (
            b'{"id": "a", "error": {"class": "CommandNotFound", "desc": '
            b"\"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
        )
        # No newline needed between JSON values: QMP is a stream.
        await raw.send('{"execute": "qmp_capabilities", "id": 1}{"execute": "query-status"}')
        assert await raw.line() == b'{"return": {}, "id": 1}\r\n'
        assert await raw.recv() == {
            "return": {"status": "prelaunch", "singlestep": False, "running": False}
        }
        await raw.send('{"execute": "qmp_capabilities", "id": "z"}\n')
        assert await raw.recv() == {
            "id": "z",
            "error": {
                "class": "CommandNotFound",
                "desc": "Capabilities negotiation is already complete, command ignored",
            },
        }
        await raw.close()


@pytest.mark.parametrize(
    ("sent", "desc"),
    [
        ('{"foo": 1}', "QMP input member 'foo' is unexpected"),
        ("[1]", "QMP input must be a JSON object"),
        ('{"arguments": {}}', "QMP input lacks member 'execute'"),
        ('{"execute": "cont", "arguments": []}', "QMP input member 'arguments' must be an object"),
        ('{"execute": "cont", "arguments": {"x": 1}}', "Parameter 'x' is unexpected"),
        ('{"execute": "human-monitor-command"}', "Parameter 'command-line' is missing"),
        ('{"exec-oob": "query-status"}', "QMP input member 'exec-oob' is unexpected"),
    ],
)
async def test_malformed_input_gets_qemus_errors(sock: Path, sent: str, desc: str) -> None:
    async with FakeQMPServer(sock) as fake:
        raw = await RawClient.open(sock)
        await raw.line()
        await raw.send('{"execute": "qmp_capabilities"}\n')
        await raw.recv()
        await raw.send(sent + "\n")
        assert await raw.recv() == {"error": {"class": "GenericError", "desc": desc}}
        assert fake.status == "running"  # nothing ran
        await raw.close()


# -- run state machine --------------------------------------------------------


async def test_paused_start_then_cont_and_stop(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True) as fake, qmp(sock) as client:
        assert await client.execute("query-status") == {
            "status": "prelaunch",
            "singlestep": False,
            "running": False,
        }
        await client.execute("cont")
        resume = await next_event(client)
        assert resume["event"] == "RESUME"
        assert "data" not in resume  # QEMU omits empty data
        assert set(resume["timestamp"]) == {"seconds", "microseconds"}
        status = await client.execute("query-status")
        assert isinstance(status, dict)
        assert (status["status"], status["running"]) == ("running", True)
        assert fake.running

        await client.execute("stop")
        assert (await next_event(client))["event"] == "STOP"
        status = await client.execute("query-status")
        assert isinstance(status, dict)
        assert (status["status"], status["running"]) == ("paused", False)
        assert fake.event_names() == ["RESUME", "STOP"]


async def test_stop_when_not_running_and_cont_when_running_change_nothing(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True) as fake, qmp(sock) as client:
        await client.execute("stop")
        assert fake.status == "prelaunch"
        await client.execute("cont")
        await client.execute("cont")
        assert fake.event_names() == ["RESUME"]


async def test_system_reset_emits_reset_and_paused_vm_goes_to_prelaunch(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        await client.execute("stop")
        await client.execute("system_reset")
        assert (await next_event(client))["event"] == "STOP"
        reset = await next_event(client)
        assert reset["event"] == "RESET"
        assert reset["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
        assert fake.status == "prelaunch"


async def test_human_monitor_command(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True) as fake, qmp(sock) as client:
        hmp = {"command-line": "info status"}
        assert await client.execute("human-monitor-command", hmp) == (
            "VM status: paused (prelaunch)\r\n"
        )
        fake.hmp_outputs["info block"] = "disk0: /tmp/x.qcow2\r\n"
        out = await client.execute("human-monitor-command", {"command-line": "info block"})
        assert out == "disk0: /tmp/x.qcow2\r\n"
        out = await client.execute("human-monitor-command", {"command-line": "nonsense 1"})
        assert out == "unknown command: 'nonsense'\r\n"


# -- powering down ------------------------------------------------------------


async def test_obedient_guest_shuts_down_and_qemu_exits(sock: Path) -> None:
    async with FakeQMPServer(sock, powerdown_delay=0.01) as fake, qmp(sock) as client:
        await client.execute("system_powerdown")
        assert (await next_event(client))["event"] == "POWERDOWN"
        shutdown = await next_event(client)
        assert shutdown["event"] == "SHUTDOWN"
        assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
        await fake.wait_exited(timeout=WAIT)
        await asyncio.wait_for(_until_disconnected(client), WAIT)
        assert not sock.exists()  # QEMU unlinks its socket on a clean exit
        assert not fake.crashed


async def test_guest_that_ignores_powerdown_keeps_running(sock: Path) -> None:
    async with (
        FakeQMPServer(sock, guest_obeys_powerdown=False, powerdown_delay=0.0) as fake,
        qmp(sock) as client,
    ):
        await client.execute("system_powerdown")
        assert (await next_event(client))["event"] == "POWERDOWN"
        await asyncio.sleep(0.05)  # give a (wrongly) obedient guest its chance
        status = await client.execute("query-status")
        assert isinstance(status, dict)
        assert status["status"] == "running"
        assert fake.event_names() == ["POWERDOWN"]
        assert not fake.exited


async def test_powerdown_of_paused_vm_waits_for_cont(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True, powerdown_delay=0.0) as fake, qmp(sock) as client:
        await client.execute("system_powerdown")
        await asyncio.sleep(0.05)
        assert fake.status == "prelaunch"  # a guest that does not run cannot act
        await client.execute("cont")
        await fake.wait_exited(timeout=WAIT)
        assert fake.event_names() == ["POWERDOWN", "RESUME", "SHUTDOWN"]


async def test_no_shutdown_leaves_vm_in_shutdown_state(sock: Path) -> None:
    async with FakeQMPServer(sock, no_shutdown=True) as fake, qmp(sock) as client:
        fake.guest_shutdown()
        assert (await next_event(client))["event"] == "SHUTDOWN"
        assert (await next_event(client))["event"] == "STOP"
        status = await client.execute("query-status")
        assert isinstance(status, dict)
        assert (status["status"], status["running"]) == ("shutdown", False)
        with pytest.raises(ExecuteError) as info:
            await client.execute("cont")
        assert info.value.error_class == "GenericError"
        assert "Resetting the Virtual Machine is required" in str(info.value)
        await client.execute("system_reset")
        assert fake.status == "prelaunch"
        await client.execute("cont")
        assert fake.running


async def test_quit_reports_shutdown_then_hangs_up(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        assert await client.execute("quit") == {}
        shutdown = await next_event(client)
        assert shutdown["data"] == {"guest": False, "reason": "host-qmp-quit"}
        await asyncio.wait_for(_until_disconnected(client), WAIT)
        assert fake.exited
        assert not sock.exists()


# -- errors, injection, recording ---------------------------------------------


async def test_unknown_command_is_command_not_found(sock: Path) -> None:
    async with FakeQMPServer(sock), qmp(sock) as client:
        with pytest.raises(ExecuteError) as info:
            await client.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert str(info.value) == "The command no-such-command has not been found"


async def test_fail_next_fails_once_without_side_effects(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True) as fake, qmp(sock) as client:
        fake.fail_next("cont", "GenericError", "boom")
        with pytest.raises(ExecuteError) as info:
            await client.execute("cont")
        assert (info.value.error_class, str(info.value)) == ("GenericError", "boom")
        assert fake.status == "prelaunch"
        await client.execute("cont")  # only the next one failed
        assert fake.running


async def test_commands_are_recorded_with_arguments(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True) as fake, qmp(sock) as client:
        await client.execute("cont")
        await client.execute("human-monitor-command", {"command-line": "info status"})
        with pytest.raises(ExecuteError):
            await client.execute("bogus", {"a": 1})
        assert fake.command_names() == [
            "qmp_capabilities",
            "cont",
            "human-monitor-command",
            "bogus",
        ]
        assert fake.commands[2].arguments == {"command-line": "info status"}
        assert fake.commands[3].arguments == {"a": 1}
        assert fake.commands[1].id is not None  # the client's id, as sent
        assert (await fake.wait_for_command("cont")).name == "cont"
        with pytest.raises(TimeoutError):
            await fake.wait_for_command("cont", count=2, timeout=0.01)


async def test_custom_handlers_and_their_errors(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        fake.set_handler("query-block", lambda args: [{"device": "disk0", "locked": False}])

        async def snapshot(args: dict[str, Any]) -> dict[str, Any]:
            raise QMPCommandError("DeviceNotFound", f"Device '{args['device']}' not found")

        fake.set_handler("blockdev-snapshot-sync", snapshot)
        assert await client.execute("query-block") == [{"device": "disk0", "locked": False}]
        with pytest.raises(ExecuteError) as info:
            await client.execute("blockdev-snapshot-sync", {"device": "nope"})
        assert info.value.error_class == "DeviceNotFound"
        names = await client.execute("query-commands")
        assert isinstance(names, list)
        assert {"name": "query-block"} in names


async def test_arbitrary_events_reach_the_client(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        fake.emit_event("BLOCK_JOB_COMPLETED", {"device": "job0", "len": 10, "offset": 10})
        event = await next_event(client)
        assert event["event"] == "BLOCK_JOB_COMPLETED"
        assert event["data"]["device"] == "job0"


async def test_events_before_negotiation_are_not_sent(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake:
        raw = await RawClient.open(sock)
        await raw.line()
        await fake.wait_connected(timeout=WAIT)
        fake.emit_event("EARLY")
        await raw.send('{"execute": "qmp_capabilities"}')
        assert await raw.recv() == {"return": {}}  # and no EARLY before it
        fake.emit_event("LATE")
        assert (await raw.recv())["event"] == "LATE"
        await raw.close()


# -- crashes and connections --------------------------------------------------


async def test_crash_interrupts_pending_command_and_drops_client(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake:
        client = QMPClient("test")
        await client.connect(str(sock))
        fake.hang_next("query-status")
        pending = asyncio.create_task(client.execute("query-status"))
        await fake.wait_for_command("query-status", timeout=WAIT)
        await fake.crash()

        with pytest.raises(ExecInterruptedError):
            await asyncio.wait_for(pending, WAIT)
        with pytest.raises(EOFError):
            await client.disconnect()  # the hang-up is reported here
        assert fake.exited and fake.crashed
        # A killed QEMU leaves its socket file behind, but nobody listens.
        assert sock.is_socket()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_unix_connection(str(sock))
    assert not sock.exists()  # the fake cleans up on exit


async def test_restart_over_a_stale_socket(sock: Path) -> None:
    async with FakeQMPServer(sock) as crashed:
        await crashed.crash()
        assert sock.is_socket()
        # A new QEMU on the same path replaces the stale socket, as QEMU does.
        async with FakeQMPServer(sock, paused=True), qmp(sock) as client:
            status = await client.execute("query-status")
            assert isinstance(status, dict)
            assert status["status"] == "prelaunch"


async def test_one_client_at_a_time_and_fresh_session_for_the_next(sock: Path) -> None:
    async with FakeQMPServer(sock, paused=True) as fake:
        first = QMPClient("first")
        await first.connect(str(sock))
        await first.execute("cont")

        second = await RawClient.open(sock)
        waiting = asyncio.create_task(second.line())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no greeting while the first client is served

        await first.disconnect()
        assert json.loads(await asyncio.wait_for(waiting, WAIT))["QMP"]
        # New session: negotiation again; the VM state carried over.
        await second.send('{"execute": "query-status", "id": 1}')
        assert (await second.recv())["error"]["class"] == "CommandNotFound"
        await second.send('{"execute": "qmp_capabilities"}{"execute": "query-status"}')
        await second.recv()
        assert (await second.recv())["return"]["status"] == "running"
        assert fake.connections == 2
        await second.close()


async def _until_disconnected(client: QMPClient) -> None:
    while client.runstate not in (Runstate.DISCONNECTING, Runstate.IDLE):
        await client.runstate_changed()


async def test_device_unplug_as_qemu_72_reports_it(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        await client.execute("device_add", {"driver": "virtio-net-pci", "id": "nic1", "mac": "x"})
        with pytest.raises(ExecuteError, match="Duplicate device ID 'nic1'"):
            await client.execute("device_add", {"driver": "virtio-net-pci", "id": "nic1"})
        await client.execute("device_del", {"id": "nic1"})
        # The virtio backend child goes first, then the device, named by its id.
        assert (await next_event(client))["data"] == {
            "path": "/machine/peripheral/nic1/virtio-backend"
        }
        assert (await next_event(client))["data"] == {
            "device": "nic1",
            "path": "/machine/peripheral/nic1",
        }
        with pytest.raises(ExecuteError, match="Device 'nic1' not found") as gone:
            await client.execute("device_del", {"id": "nic1"})
        assert gone.value.error_class == "DeviceNotFound"
        # A guest that never acks keeps the device, and QEMU says nothing.
        fake.devices.unplug_delay = None
        fake.devices.devices["vol-1"] = "virtio-blk-pci"
        await client.execute("device_del", {"id": "vol-1"})
        await client.execute("query-status")
        assert "vol-1" in fake.devices.devices and client.events.empty()


async def test_block_job_states_and_errors_as_qemu_72_reports_them(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        fake.jobs.hold_jobs = True
        backup = {"job-id": "j", "device": "root", "target": "t", "sync": "full"}
        await client.execute("blockdev-backup", {**backup, "auto-dismiss": False})
        assert [(await next_event(client))["data"]["status"] for _ in range(2)] == [
            "created",
            "running",
        ]
        (info,) = await client.execute("query-jobs")  # type: ignore[misc]
        assert info["status"] == "running" and "error" not in info
        with pytest.raises(ExecuteError, match="in state 'running' cannot accept command verb"):
            await client.execute("job-dismiss", {"id": "j"})
        with pytest.raises(ExecuteError, match="Job ID 'j' already in use"):
            await client.execute("blockdev-backup", backup)
        fake.jobs.finish_job("j")
        assert [(await next_event(client))["data"]["status"] for _ in range(3)] == [
            "waiting",
            "pending",
            "concluded",
        ]
        await client.execute("job-dismiss", {"id": "j"})
        assert (await next_event(client))["data"] == {"id": "j", "status": "null"}
        assert await client.execute("query-jobs") == []
        # A failing job aborts; with auto-dismiss (the default) it is gone at once.
        fake.jobs.hold_jobs = False
        fake.jobs.fail_next_job("disk full")
        await client.execute("blockdev-backup", backup)
        statuses = [(await next_event(client))["data"]["status"] for _ in range(5)]
        assert statuses == ["created", "running", "aborting", "concluded", "null"]


async def test_migration_as_qemu_72_reports_it(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        assert await client.execute("query-migrate") == {}
        with pytest.raises(ExecuteError, match="File descriptor named 'm' has not been found"):
            await client.execute("migrate", {"uri": "fd:m"})
        with pytest.raises(ExecuteError, match="Parameter 'max-bandwith' is unexpected"):
            await client.execute("migrate-set-parameters", {"max-bandwith": 1})
        # No MIGRATION events without the capability.
        await client.execute("getfd", {"fdname": "m"})
        await client.execute("migrate", {"uri": "fd:m"})
        assert (await next_event(client))["event"] == "STOP"  # it ended; the VM was running
        assert fake.migration.status == "completed" and fake.status == "postmigrate"
        assert "MIGRATION" not in fake.event_names()
        caps = {"capabilities": [{"capability": "events", "state": True}]}
        await client.execute("migrate-set-capabilities", caps)
        fake.migration.fail_next_migration("disk full")
        await client.execute("getfd", {"fdname": "m"})
        await client.execute("migrate", {"uri": "fd:m"})
        statuses = [(await next_event(client))["data"]["status"] for _ in range(3)]
        assert statuses == ["setup", "active", "failed"]
        info = await client.execute("query-migrate")
        assert info == {"status": "failed", "error-desc": "disk full"}
        fake.migration.hold_migration = True
        await client.execute("getfd", {"fdname": "m"})
        await client.execute("migrate", {"uri": "fd:m"})
        assert [(await next_event(client))["data"]["status"] for _ in range(2)] == [
            "setup",
            "active",
        ]
        with pytest.raises(ExecuteError, match="migration process in progress"):
            await client.execute("migrate-set-capabilities", caps)
        fake.migration.finish_migration()
        assert (await next_event(client))["data"] == {"status": "completed"}


async def test_incoming_migration_as_qemu_72_reports_it(sock: Path) -> None:
    async with FakeQMPServer(sock) as fake, qmp(sock) as client:
        with pytest.raises(ExecuteError, match="'-incoming' was not specified"):
            await client.execute("migrate-incoming", {"uri": "fd:m"})
    async with FakeQMPServer(sock, paused=True, incoming=True) as fake, qmp(sock) as client:
        assert fake.status == "inmigrate"
        caps = {"capabilities": [{"capability": "events", "state": True}]}
        await client.execute("migrate-set-capabilities", caps)
        await client.execute("getfd", {"fdname": "m"})
        await client.execute("migrate-incoming", {"uri": "fd:m"})
        # No 'setup' on the loading side; the run state is set before 'completed'.
        assert (await next_event(client))["data"] == {"status": "active"}
        assert (await next_event(client))["data"] == {"status": "completed"}
        assert fake.status == "paused"
        with pytest.raises(ExecuteError, match="already been started"):
            await client.execute("migrate-incoming", {"uri": "fd:m"})
