"""settle.wait_quiet: when a guest about to become a warm template has gone quiet,
decided from QEMU's CPU time (a fake clock and CPU counter here)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from hangar.services.templates import settle


class FakeGuest:
    """A QEMU whose CPU use per second follows ``load`` (one entry per window)."""

    def __init__(self, load: list[float]):
        self.load = load
        self.now = 0.0
        self.used = 0.0
        self.windows = 0

    def clock(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.used

    async def sleep(self, seconds: float) -> None:
        share = self.load[min(self.windows, len(self.load) - 1)]
        self.windows += 1
        self.now += seconds
        self.used += share * seconds


def wait(guest: FakeGuest, cpus: int = 1, timeout: float = 20) -> bool:
    return asyncio.run(
        settle.wait_quiet(
            guest.cpu, cpus, window=2, timeout=timeout, clock=guest.clock, sleep=guest.sleep
        )
    )


def test_a_busy_guest_is_waited_for_until_it_goes_quiet() -> None:
    guest = FakeGuest([1.0, 0.9, 0.5, 0.05])
    assert wait(guest)
    assert guest.windows == 4 and guest.now == 8


def test_an_idle_guest_takes_one_window() -> None:
    guest = FakeGuest([0.05])
    assert wait(guest) and guest.now == 2


def test_the_share_counts_every_vcpu() -> None:
    # 0.3 of a core is busy for one vCPU, quiet for two (0.15 each).
    assert not wait(FakeGuest([0.3]), cpus=1, timeout=4)
    assert wait(FakeGuest([0.3]), cpus=2)


def test_a_guest_that_stays_busy_ends_the_wait_at_the_timeout() -> None:
    guest = FakeGuest([1.0])
    assert not wait(guest, timeout=10)
    assert guest.now == 10


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        wait(FakeGuest([0.0]), cpus=0)


def test_qemu_cpu_seconds_reads_every_thread_of_a_process() -> None:
    # A child whose two threads burn CPU and end: its total still covers both.
    code = (
        "import threading, time\n"
        "def burn():\n"
        "    while time.thread_time() < 0.4: pass\n"
        "ts = [threading.Thread(target=burn) for _ in range(2)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print('done', flush=True); time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        assert settle.qemu_cpu_seconds(child.pid) >= 0.7
        assert settle.qemu_cpu_seconds(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()
