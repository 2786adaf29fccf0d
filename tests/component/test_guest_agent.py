"""The guest agent client against a fake agent on a unix socket, as QEMU's chardev serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hangar.errors import QemuFailed
from hangar.services.qga import agent as agent_module
from hangar.services.qga.agent import AgentUnavailable, GuestAgent, GuestCommandTimeout
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
