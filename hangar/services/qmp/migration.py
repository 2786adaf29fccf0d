"""Saving and loading a VM's RAM and device state (a migration stream in a file), and
external disk snapshots of a running VM's root disk, over QMP.

QEMU 7.2 has no ``file:`` migration URI and ``exec:`` runs a shell, so the stream
goes through a file descriptor hangard opens and passes with ``getfd``
(shared/MEASUREMENTS.md). Internal snapshots (``snapshot-save``) are not used:
QEMU refuses them when any disk (UEFI's pflash variable store) is not qcow2.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hangar.errors import QemuFailed
from hangar.node.base import SavedGuest as SavedGuest  # re-exported
from hangar.services.qmp.monitor import EventWaiter, Monitor

# How often a running save's progress is read (query-migrate) and the caller may
# cancel it; its end comes as a MIGRATION event.
SAVE_PROGRESS = 0.1
# How a migration ends (MigrationStatus in QEMU's QAPI schema).
_ENDS = ("completed", "failed", "cancelled")
# QEMU's default limit is 128 MiB/s, for a network; a local file takes all it can.
UNLIMITED_BANDWIDTH = 1 << 40
SAVE_TIMEOUT = 1800.0
LOAD_TIMEOUT = 600.0


ROOT = "root"  # the root disk's node name in hangar's argv


async def root_node(monitor: Monitor) -> str:
    """The node the root disk's device writes to now.

    It is ``root`` until the first live snapshot, then the newest overlay's node
    (``root-XXXXXXXX``, see :func:`add_overlay`). Other devices (volumes, the
    cloud-init seed, an ISO, UEFI pflash) have other node names.
    """
    devices: list[dict[str, Any]] = await monitor.execute("query-block")
    nodes = [str(d["inserted"]["node-name"]) for d in devices if d.get("inserted")]
    tops = [n for n in nodes if n == ROOT or n.startswith(ROOT + "-")]
    if len(tops) != 1:
        raise QemuFailed(f"cannot tell the root disk among QEMU's block devices: {nodes}")
    return tops[0]


async def add_overlay(monitor: Monitor, overlay: Path) -> str:
    """Open the new qcow2 ``overlay`` in QEMU (without its backing: it is attached next)
    and return its node name."""
    node = f"root-{uuid.uuid4().hex[:8]}"
    # Passed as a descriptor: hangard made the file, a sandboxed QEMU may not open it.
    async with monitor.file_for_qemu(overlay) as filename:
        await monitor.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": node,
                "discard": "unmap",
                "backing": None,
                "file": {"driver": "file", "filename": filename, "discard": "unmap"},
            },
        )
    return node


async def switch_to_overlay(monitor: Monitor, top: str, overlay_node: str) -> None:
    """Make the root device write into ``overlay_node``, whose backing becomes ``top``
    (QEMU drains and flushes ``top`` first: it is frozen from here on)."""
    await monitor.execute("blockdev-snapshot", {"node": top, "overlay": overlay_node})


async def skip_shared_ram(monitor: Monitor, skip: bool = True) -> None:
    """Leave RAM that lives in a shared file out of the stream (``x-ignore-shared``):
    the file holds it. Both the saving and the loading QEMU need it. It changes the
    stream's format, so a QEMU that loaded such a stream turns it off again: its own
    snapshots later must load anywhere."""
    await monitor.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "x-ignore-shared", "state": skip}]},
    )


async def save_memory(
    monitor: Monitor,
    target: Path,
    progress: Callable[[float], None] | None = None,
    *,
    ram_in_file: bool = False,
) -> None:
    """Write the paused VM's RAM and device state to the new file ``target``
    (``ram_in_file``: device state only, its RAM is in a shared file).

    After it, QEMU has handed its disks over ("postmigrate"): ``cont`` takes them back.
    On failure or cancel (``progress`` raising) the migration is cancelled and
    ``target`` removed.
    """
    await monitor.execute("migrate-set-parameters", {"max-bandwidth": UNLIMITED_BANDWIDTH})
    # QEMU sends MIGRATION events (status changes) only with this capability on.
    await monitor.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "events", "state": True}]},
    )
    if ram_in_file:
        await skip_shared_ram(monitor)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    name = f"snap-{uuid.uuid4().hex[:8]}"
    try:
        try:
            await monitor.send_fd(name, fd)
        finally:
            os.close(fd)  # QEMU holds its own copy
        # Listening before the migration starts: a small one can end before the reply.
        async with monitor.expect("MIGRATION", lambda d: d.get("status") in _ENDS) as end:
            await monitor.execute("migrate", {"uri": f"fd:{name}"})
            await _wait_saved(monitor, end, progress)
        await _left_finish_migrate(monitor)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


async def _left_finish_migrate(monitor: Monitor, timeout: float = 10.0) -> None:
    """QEMU sends MIGRATION 'completed' from the migration thread, and leaves the
    run state 'finish-migrate' for 'postmigrate' a moment later in its main loop;
    until then it refuses 'cont' ("Migration is not finalized yet")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await monitor.status() == "finish-migrate":
        if loop.time() > deadline:
            raise QemuFailed(f"QEMU did not finish the migration in {timeout:g} s")
        await asyncio.sleep(0.005)


async def _wait_saved(
    monitor: Monitor, end: EventWaiter, progress: Callable[[float], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SAVE_TIMEOUT
    while True:
        left = deadline - loop.time()
        tick = left if progress is None else min(left, SAVE_PROGRESS)
        ended = await end.get(max(tick, 0.0))
        if ended is not None:
            if ended["status"] == "completed":
                return
            # The event has no reason; query-migrate keeps the last one's.
            info: dict[str, Any] = await monitor.execute("query-migrate")
            raise QemuFailed(
                f"saving the VM's memory failed: {info.get('error-desc', ended['status'])}",
                hint="see QEMU's log in the VM's folder",
            )
        if progress is not None:
            info = await monitor.execute("query-migrate")
        try:
            if progress is not None:
                ram = info.get("ram") or {}
                total = int(ram.get("total") or 0)
                if total:
                    progress(100.0 * (total - int(ram.get("remaining") or 0)) / total)
            if loop.time() > deadline:
                raise QemuFailed(f"saving the VM's memory took over {SAVE_TIMEOUT:g} s")
        except BaseException:
            await monitor.execute("migrate_cancel")
            raise


async def load_memory(
    monitor: Monitor, source: Path, *, alive: Callable[[], bool], ram_in_file: bool = False
) -> None:
    """Load a saved stream into a QEMU started with ``-incoming defer`` (and ``-S``):
    it ends paused, with the saved RAM and devices. ``alive`` says whether QEMU still
    runs (a stream that does not fit the command line makes QEMU exit).
    ``ram_in_file``: the stream holds devices only; the RAM comes from the file QEMU
    maps (argv.RamFile)."""
    if ram_in_file:
        await skip_shared_ram(monitor)
    # The loading QEMU sends MIGRATION events too, with the capability on. Its
    # 'completed' comes once the VM's run state is final (QEMU sets it after the
    # run state, so that an observer may use the VM at once); a failed load makes
    # QEMU 7.2 exit.
    await monitor.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "events", "state": True}]},
    )
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    name = f"snap-{uuid.uuid4().hex[:8]}"
    try:
        await monitor.send_fd(name, fd)
    finally:
        os.close(fd)
    exited = "QEMU exited while loading the saved memory"
    async with monitor.expect("MIGRATION", lambda d: d.get("status") in _ENDS) as end:
        await monitor.execute("migrate-incoming", {"uri": f"fd:{name}"})
        try:
            ended = await end.get(LOAD_TIMEOUT)
        except QemuFailed:
            raise QemuFailed(exited) from None
    if ended is None:
        if not alive():
            raise QemuFailed(exited)
        raise QemuFailed(f"loading the saved memory took over {LOAD_TIMEOUT:g} s")
    if ended["status"] != "completed" or not alive():
        raise QemuFailed(exited)
    try:
        status = await monitor.status()
    except QemuFailed:
        if not alive():
            raise QemuFailed(exited) from None
        raise
    if status != "paused":
        raise QemuFailed(f"QEMU is '{status}' after loading the saved memory")
    if ram_in_file:
        await skip_shared_ram(monitor, False)
