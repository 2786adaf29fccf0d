"""Reseeding a restored guest's kernel CRNG where no vmgenid does it.

A memory-snapshot restore resumes the saved kernel, random state included: two
restores of one snapshot (or a restore and the VM that went on from it) would draw
the same "random" bytes. On q35 QEMU's vmgenid makes the guest reseed the moment it
is loaded (argv._entropy_args). microvm has no vmgenid (QEMU 7.2's microvm ACPI
tables carry none), so hangard hands the guest host randomness itself, the way a
warm launch does: through the guest agent (reseed.pl) when the VM has one, else
through the tiny image's console hook (``hangar-reseed SEED``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

from hangar.errors import HangarError
from hangar.host.sockets import open_unix_connection
from hangar.services.qemu.argv import VMFiles
from hangar.services.qga.agent import GuestAgent
from hangar.spec.vm import VMConfig

log = logging.getLogger(__name__)
RESEED_SCRIPT = (Path(__file__).parent / "reseed.pl").read_text()
RESEED_TIMEOUT = 20.0


def needs_reseed(config: VMConfig) -> bool:
    """True when a loaded guest of ``config`` does not reseed by itself (no vmgenid)."""
    return config.entropy and config.machine != "q35"


async def reseed(config: VMConfig, files: VMFiles, agent: GuestAgent | None) -> bool:
    """Give the just-restored guest fresh randomness; False (logged) if it did not
    confirm. The restore stands either way: the guest's CRNG then diverges at its
    next scheduled reseed (virtio-rng feeds it), as on any hypervisor without vmgenid."""
    seed = secrets.token_bytes(32)
    try:
        async with asyncio.timeout(RESEED_TIMEOUT):
            if agent is not None:
                result = await agent.exec(["perl", "-e", RESEED_SCRIPT], input_data=seed)
                if result.exit_code != 0:
                    raise HangarError(f"reseed.pl failed: {result.stderr.strip()[:200]}")
            else:
                await _by_console(files, seed.hex())
        return True
    except (HangarError, OSError, TimeoutError) as exc:
        log.warning("VM %s: its kernel's CRNG was not reseeded after the restore: %s",
                    config.name, exc)  # fmt: skip
        return False


async def _by_console(files: VMFiles, seed: str) -> None:
    token = secrets.token_hex(6)
    reader, writer = await open_unix_connection(files.console_socket)
    try:
        # Ctrl-U: whatever was half-typed at the saved prompt is dropped. The arithmetic
        # makes the confirmation differ from the echoed command line.
        writer.write(f"\x15hangar-reseed {seed} && echo reseeded-$((6*7))-{token}\n".encode())
        await writer.drain()
        want, seen = f"reseeded-42-{token}".encode(), b""
        while want not in seen:
            chunk = await reader.read(4096)
            if not chunk:
                raise OSError("the serial console closed before the guest answered")
            seen = seen[-4096:] + chunk
    finally:
        writer.close()
