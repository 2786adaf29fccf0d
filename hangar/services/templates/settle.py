"""Wait for a guest to settle before it is saved as a warm template.

Every VM launched from the template resumes whatever the guest was doing when it
was saved. A guest saved seconds after its boot is still busy with it (cloud-init's
last stages, services starting late, first runs of timers), and each launch then
redoes that work before anything of its own: under TCG it doubled the time to
a fresh identity. QEMU's own CPU time says when the guest went quiet, for any
guest and without asking it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Quiet: QEMU used less than this share of its vCPUs over one window. An idle
# debian-12 guest under TCG costs ~5 % of a core, a busy one all of it.
QUIET_SHARE = 0.2
QUIET_WINDOW = 2.0
# A guest that never goes quiet (a workload of its own) is saved anyway, this late.
QUIET_TIMEOUT = 120.0


def qemu_cpu_seconds(pid: int) -> float:
    """CPU time used so far by QEMU: all its threads, vCPUs and I/O, ended ones too."""
    # The name field may hold spaces and parentheses: the fields after the last ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def wait_quiet(
    cpu_seconds: Callable[[], float],
    cpus: int,
    *,
    share: float = QUIET_SHARE,
    window: float = QUIET_WINDOW,
    timeout: float = QUIET_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Wait until a window of ``window`` seconds in which the guest used less than
    ``share`` of its ``cpus`` vCPUs. False if it was still busy after ``timeout``."""
    if cpus < 1 or window <= 0:
        raise ValueError("a guest has at least one vCPU, and a window takes time")
    deadline = clock() + timeout
    while True:
        start, used = clock(), cpu_seconds()
        await sleep(window)
        elapsed = clock() - start
        if cpu_seconds() - used < share * cpus * elapsed:
            return True
        if clock() >= deadline:
            return False
