"""A guest that floods its serial console cannot fill the host's disk: hangard keeps
serial.log bounded while the (fake) QEMU appends to it, and logs keep working."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hangar.api.logs import _stream
from hangar.services import serial_log
from hangar.spec.vm import VMCreate
from tests.component.conftest import PlatformFactory

CAP = 64 * 1024


async def test_a_flooded_serial_log_stays_bounded_and_keeps_its_tail(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serial_log, "CAP", CAP)
    monkeypatch.setattr(serial_log, "CHECK_INTERVAL", 0.01)
    platform = make_platform()
    vm = await platform.vms.create(VMCreate(name="web", image="tiny"))
    log = Path(vm.serial_log)
    # The fake guest echoes what its console receives into serial.log, as a guest
    # printing to its serial port does: 20 x the cap in all.
    reader, writer = await asyncio.open_unix_connection(
        str(await platform.vms.console_socket("web"))
    )
    total = 0
    try:
        for batch in range(160):
            data = b"".join(b"flood %03d %05d %s\r\n" % (batch, n, b"x" * 40) for n in range(150))
            writer.write(data)
            await writer.drain()
            got = 0
            async with asyncio.timeout(10):
                while got < len(data):
                    got += len(await reader.read(65536))
            total += len(data)
            # Paced like a real serial port: hangard's check comes round at least
            # once per batch (so the bound below holds whatever the machine's speed).
            async with asyncio.timeout(10):
                while log.stat().st_size > CAP:
                    await asyncio.sleep(0.005)
        writer.write(b"THE LAST LINE\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            while log.stat().st_size > CAP or b"THE LAST LINE" not in (
                serial_log.rotated(log).read_bytes()[-100:] + log.read_bytes()
            ):
                await asyncio.sleep(0.01)
    finally:
        writer.close()
    assert total > 20 * CAP
    kept = log.stat().st_size + serial_log.rotated(log).stat().st_size
    # Bounded: the two files, each at most the cap plus what came in one round.
    assert kept <= 2 * (CAP + len(data)), kept
    assert not log.with_name("serial.log.2").exists()
    # logs: the tail is the guest's last output, across the rotation if need be.
    head, offset = serial_log.tail(log, 3)
    text = b"".join([c async for c in _stream(log, head, offset, follow=False)])
    assert text.endswith(b"flood 159 00149 " + b"x" * 40 + b"\nTHE LAST LINE\n"), text
    assert len(text.splitlines()) == 3
