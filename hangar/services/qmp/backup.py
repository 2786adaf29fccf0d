"""A running VM's root disk copied as of now: QEMU's backup block job, over QMP.

How often the job's progress is read and the caller may cancel it; its end comes as
a JOB_STATUS_CHANGE event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hangar.errors import QemuFailed
from hangar.services.qmp.migration import root_node
from hangar.services.qmp.monitor import EventWaiter, Monitor

BACKUP_PROGRESS = 0.1
BACKUP_TIMEOUT = 3600.0


async def backup(
    monitor: Monitor,
    target: Path,
    *,
    sync: str,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Copy the running VM's root disk into the qcow2 ``target`` as of now (QMP backup job).

    ``sync='full'`` copies every block; ``'top'`` only the overlay's own blocks
    (``target`` is then an overlay of the same image). The target node is
    always removed from QEMU again, whatever happens.
    """
    tag = uuid.uuid4().hex[:8]
    node, job = f"copy-{tag}", f"copy-job-{tag}"
    # Passed as a descriptor: a sandboxed QEMU cannot open the image store itself.
    async with monitor.file_for_qemu(target) as filename:
        await monitor.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": node,
                # No backing: QEMU must not open the image's disk a second time;
                # blocks not in the copy are read from its backing file later.
                "backing": None,
                "file": {"driver": "file", "filename": filename},
            },
        )
    try:
        # Listening before the job starts: a small copy can conclude before the reply.
        async with monitor.expect("JOB_STATUS_CHANGE", _concluded(job)) as concluded:
            await monitor.execute(
                "blockdev-backup",
                {
                    "job-id": job,
                    "device": await root_node(monitor),  # 'root' until a live snapshot
                    "target": node,
                    "sync": sync,
                    "auto-finalize": True,
                    "auto-dismiss": False,
                },
            )
            try:
                await _wait_for_job(monitor, job, concluded, progress)
            finally:
                # A job that never concluded cannot be dismissed; QEMU drops it itself.
                with contextlib.suppress(QemuFailed):
                    await monitor.execute("job-dismiss", {"id": job})
    finally:
        await monitor.execute("blockdev-del", {"node-name": node})


def _concluded(job: str) -> Callable[[Mapping[str, Any]], bool]:
    """JOB_STATUS_CHANGE of ``job`` to its last state: ``concluded`` ends both a job
    that finished (… waiting, pending, concluded) and one that failed or was
    cancelled (… aborting, concluded)."""
    return lambda data: data.get("id") == job and data.get("status") == "concluded"


async def _wait_for_job(
    monitor: Monitor,
    job: str,
    concluded: EventWaiter,
    progress: Callable[[float], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BACKUP_TIMEOUT
    while True:
        left = deadline - loop.time()
        tick = left if progress is None else min(left, BACKUP_PROGRESS)
        if await concluded.get(max(tick, 0.0)) is not None:
            break
        if loop.time() > deadline:
            await monitor.execute("job-cancel", {"id": job})
            raise QemuFailed(f"copying the running disk took over {BACKUP_TIMEOUT:g} s")
        mine = await _job_info(monitor, job)
        total = int(mine.get("total-progress") or 0)
        if progress is not None and total > 0:
            try:
                progress(100.0 * int(mine.get("current-progress") or 0) / total)
            except BaseException:  # cancelled: stop QEMU's job too
                await monitor.execute("job-cancel", {"id": job})
                raise
    # The event says that it ended, query-jobs whether it failed and why.
    error = (await _job_info(monitor, job)).get("error")
    if error:
        raise QemuFailed(f"copying the running disk failed: {error}")


async def _job_info(monitor: Monitor, job: str) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = await monitor.execute("query-jobs")
    mine = [j for j in jobs if j.get("id") == job]
    if not mine:
        raise QemuFailed(f"QEMU lost the backup job {job}")
    return mine[0]
