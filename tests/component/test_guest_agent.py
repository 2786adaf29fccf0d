"""The guest agent client against a fake agent on a unix socket, as QEMU's chardev serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hangar.errors import HangarError, QemuFailed
from hangar.services.qga import agent as agent_module
from hangar.services.qga.agent import (
    AgentMisbehaved,
    AgentUnavailable,
    ExecResult,
    GuestAgent,
    GuestCommandTimeout,
    reply_text,
)
from tests.support.fake_agent import FakeAgent


@pytest.fixture
async def fake(home: Path) -> AsyncIterator[FakeAgent]:
    server = FakeAgent(home / "qga.sock", stale=b'{"return": 12}\n')
    await server.start()
    yield server
    await server.close()


async def test_exec_returns_output_and_exit_code(fake: FakeAgent) -> None:
    agent = GuestAgent(fake.path, "vm")
    result = await agent.exec(["echo", "hello", "world"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "hello world\n", "")
    failed = await agent.exec(["false"])
    assert (failed.exit_code, failed.stderr) == (3, "it failed\n")
    # Every conversation starts with a sync; exec polls until the command has exited.
    assert fake.commands.count("guest-exec-status") >= 4
    assert fake.commands[0] == "guest-sync-delimited"


async def test_stdin_reaches_the_command(fake: FakeAgent) -> None:
    result = await GuestAgent(fake.path, "vm").exec(["cat"], input_data=b"\x00binary\xff")
    assert result.stdout == "\x00binary\ufffd"


async def test_stale_replies_before_the_sync_are_skipped(fake: FakeAgent) -> None:
    # The fake sends a stale {"return": 12} before each sync reply.
    info = await GuestAgent(fake.path, "vm").call("guest-get-host-name")
    assert info == {"host-name": "fakeguest"}


async def test_agent_errors_are_reported(fake: FakeAgent) -> None:
    with pytest.raises(QemuFailed, match="no such thing"):
        await GuestAgent(fake.path, "vm").call("guest-fsfreeze-status")


async def test_a_silent_agent_is_unavailable_not_a_hang(
    fake: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "SYNC_TIMEOUT", 0.3)
    fake.silent = True
    with pytest.raises(AgentUnavailable, match="does not answer"):
        await GuestAgent(fake.path, "vm").call("guest-ping")


async def test_no_channel_is_unavailable(home: Path) -> None:
    with pytest.raises(AgentUnavailable, match="not open"):
        await GuestAgent(home / "missing.sock", "vm").call("guest-ping")


async def test_a_command_that_runs_too_long_times_out(fake: FakeAgent) -> None:
    fake.exec_polls = 10**6
    with pytest.raises(GuestCommandTimeout, match="still runs"):
        await GuestAgent(fake.path, "vm").exec(["echo"], timeout=0.3)


async def test_conversations_take_turns(fake: FakeAgent) -> None:
    agent = GuestAgent(fake.path, "vm")
    results = await asyncio.gather(*(agent.exec(["echo", str(i)]) for i in range(5)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]


# --- a guest agent that does not keep to the protocol (issue 14, item 12) -------------


async def test_an_oversized_reply_is_refused_not_buffered(
    fake: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "MAX_REPLY", 64 * 1024)
    fake.raw["guest-get-host-name"] = b'{"return": "' + b"x" * 200_000 + b'"}\n'
    with pytest.raises(AgentMisbehaved, match="longer than"):
        await GuestAgent(fake.path, "vm").call("guest-get-host-name")


async def test_junk_without_a_delimiter_before_the_sync_is_a_hangar_error(
    fake: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop asks the agent after ACPI and forces the power-off on any HangarError:
    a guest flooding its channel must end up as one, not as asyncio's LimitOverrunError."""
    monkeypatch.setattr(agent_module, "MAX_REPLY", 64 * 1024)
    monkeypatch.setattr(agent_module, "SYNC_TIMEOUT", 0.5)
    fake.raw["guest-sync-delimited"] = b"y" * 300_000
    with pytest.raises(HangarError):
        await GuestAgent(fake.path, "vm").call("guest-shutdown", {"mode": "powerdown"})


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("guest-exec", b'{"return": [1, 2]}\n'),
        ("guest-exec", b'{"return": {"pid": "12"}}\n'),
        ("guest-exec-status", b'{"return": {"exited": true, "out-data": "%%%"}}\n'),
        ("guest-exec-status", b'{"return": "done"}\n'),
    ],
)
async def test_a_malformed_exec_reply_is_refused(
    fake: FakeAgent, command: str, reply: bytes
) -> None:
    fake.raw[command] = reply
    with pytest.raises(AgentMisbehaved):
        await GuestAgent(fake.path, "vm").exec(["echo", "hi"], poll=0.01)


async def test_an_error_of_the_wrong_shape_is_still_a_refusal(fake: FakeAgent) -> None:
    fake.raw["guest-ping"] = b'{"error": ["not", "an", "object"]}\n'
    with pytest.raises(QemuFailed, match="no description"):
        await GuestAgent(fake.path, "vm").call("guest-ping")


def test_reply_fields_of_the_wrong_type_read_as_absent() -> None:
    assert reply_text({"host-name": ["x"]}, "host-name") is None
    assert reply_text({"host-name": "a" * 1000}, "host-name") == "a" * 256
    assert ExecResult.of({"exitcode": "0", "signal": True}).exit_code is None
