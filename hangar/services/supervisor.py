"""Watching running QEMU processes: one :class:`Runtime` per VM whose QEMU is alive.

A runtime holds the QMP connection and a pidfd. When the pidfd turns readable
QEMU has exited; within a second the supervisor works out why (exit status
written by the supervising shell, the last QMP SHUTDOWN event, whether hangard
asked for it) and reports an :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from hangar.errors import QemuFailed
from hangar.node.base import Outcome as Outcome  # re-exported
from hangar.services.lifecycle import PowerState
from hangar.services.qemu import process, serial_log
from hangar.services.qemu.argv import VMFiles
from hangar.services.qemu.jail import Jail
from hangar.services.qmp.monitor import Monitor
from hangar.spec.vm import vm_uuid

log = logging.getLogger(__name__)

# A guest that resets sooner than this after start is probably boot-looping
# (e.g. a kernel panic with panic=-1): hangard stops it instead of restarting.
MIN_UPTIME_FOR_REBOOT = 5.0
EXIT_STATUS_WAIT = 1.0
QMP_CONNECT_TIMEOUT = 10.0


def exit_outcome(
    status: process.ExitStatus | None,
    shutdown: Mapping[str, Any] | None,
    requested: str | None,
    serial: Sequence[str],
    uptime: float,
) -> Outcome:
    """Why QEMU exited, as a power state and a sentence. Pure.

    ``requested`` is hangard's own reason when it stopped the VM; ``shutdown``
    the data of QEMU's last SHUTDOWN event, if one arrived.
    """
    if requested is not None and (status is None or status.clean or status.signal):
        return Outcome(PowerState.STOPPED, requested)
    why = str(shutdown.get("reason", "")) if shutdown else ""
    if status is not None and status.clean:
        if why == "guest-shutdown":
            return Outcome(PowerState.STOPPED, "the guest powered off", guest_poweroff=True)
        if why == "guest-reset":
            if uptime < MIN_UPTIME_FOR_REBOOT:
                return Outcome(
                    PowerState.CRASHED,
                    _with_serial(f"the guest reset {uptime:.1f} s after start", serial),
                )
            return Outcome(PowerState.STOPPED, "the guest rebooted", reboot=True)
        if why == "guest-panic":
            return Outcome(PowerState.CRASHED, _with_serial("the guest kernel panicked", serial))
        if why == "host-signal":
            return Outcome(PowerState.STOPPED, "QEMU was told to quit by a signal")
        if why == "host-qmp-quit":
            return Outcome(PowerState.STOPPED, "QEMU was told to quit over QMP")
        return Outcome(PowerState.STOPPED, "QEMU exited")
    if status is None:
        return Outcome(
            PowerState.CRASHED, _with_serial("QEMU vanished; its exit status is unknown", serial)
        )
    return Outcome(PowerState.CRASHED, _with_serial(status.describe(), serial))


def _with_serial(text: str, serial: Sequence[str]) -> str:
    if not serial:
        return text
    return text + "; last serial output:\n" + "\n".join(serial)


class Runtime:
    """A live QEMU: its pid, pidfd and QMP connection."""

    def __init__(self, vm_id: str, name: str, files: VMFiles, pid: int, monitor: Monitor):
        self.vm_id = vm_id
        self.name = name
        self.files = files
        self.pid = pid
        self.monitor = monitor
        self.pidfd = os.pidfd_open(pid)
        self.started = time.monotonic()
        # Set while hangard drives a transition, shown instead of QEMU's status.
        self.transition: PowerState | None = None
        # hangard's reason when it is the one stopping the VM.
        self.stop_reason: str | None = None
        self.last_shutdown: Mapping[str, Any] | None = None
        self.exited = asyncio.Event()
        self.outcome: Outcome | None = None
        # QEMU's run status ("running", "paused", "prelaunch", ...), see power_state.
        self.run_status = "prelaunch"

    async def power_state(self) -> PowerState:
        """The power state from QEMU's own run status, kept current by its QMP events.

        Events rather than a query-status per read: a command in flight while QEMU
        exits can make qemu.qmp drop the SHUTDOWN event that says why it exited.
        """
        if self.exited.is_set():
            return self.outcome.state if self.outcome else PowerState.STOPPED
        if self.transition is not None:
            return self.transition
        return _POWER_OF_STATUS.get(self.run_status, PowerState.PAUSED)

    def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        if event == "SHUTDOWN":
            self.last_shutdown = data
            self.run_status = "shutdown"
        elif event == "STOP":
            self.run_status = "paused"
        elif event == "RESUME":
            self.run_status = "running"
        elif event == "GUEST_PANICKED":
            self.run_status = "guest-panicked"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, sig)


_POWER_OF_STATUS = {
    "running": PowerState.RUNNING,
    "shutdown": PowerState.STOPPING,
    "internal-error": PowerState.CRASHED,
    "guest-panicked": PowerState.CRASHED,
    "io-error": PowerState.PAUSED,
}

ExitHandler = Callable[[Runtime, Outcome], Awaitable[None]]


class Supervisor:
    def __init__(self, on_exit: ExitHandler):
        self._on_exit = on_exit
        self._runtimes: dict[str, Runtime] = {}
        # Keeps every running VM's serial log bounded (serial_log.py); runs while any does.
        self._log_capper: asyncio.Task[None] | None = None

    def get(self, vm_id: str) -> Runtime | None:
        return self._runtimes.get(vm_id)

    async def launch(
        self,
        vm_id: str,
        name: str,
        argv: Sequence[str],
        files: VMFiles,
        jail: Jail | None = None,
        *,
        qmp: process.QmpSockets,
    ) -> Runtime:
        """Start QEMU (paused, -S) and talk QMP on ``qmp``, the socket ``argv`` hands
        QEMU (render_argv's ``qmp_fd``). On failure nothing is left running.

        Takes ``qmp`` over: its listening socket is closed once QEMU holds it, its
        connection becomes the monitor's (or is closed on failure). Raises
        :class:`QemuFailed` with QEMU's own messages when it does not come up.
        """
        try:
            await asyncio.to_thread(process.spawn, argv, files, jail, qmp=qmp)
        except BaseException:
            qmp.close()
            raise
        qmp.close_listener()
        monitor = Monitor(f"hangar-{name}")
        try:
            await monitor.attach(
                qmp.take_client(),
                timeout=QMP_CONNECT_TIMEOUT,
                alive=lambda: not files.exit_status.exists(),
            )
        except QemuFailed as exc:
            await monitor.close()
            pid = process.read_pid(files)
            if pid is not None and process.is_our_qemu(pid, vm_uuid(vm_id)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await _wait_for_file(files.exit_status, 2.0)
            raise process.failed_to_start(files, exc.message) from exc
        pid = process.read_pid(files)
        if pid is None:
            await monitor.quit()
            await monitor.close()
            raise process.failed_to_start(files, "QEMU wrote no pid file")
        return await self._watch(vm_id, name, files, pid, monitor)

    async def adopt(self, vm_id: str, name: str, files: VMFiles) -> Runtime | None:
        """Take over a QEMU that kept running while hangard was away; None if there is none.

        By the socket's path: hangard's copy of the listening socket went with the
        hangard that started QEMU, the file it bound stays (never through a link:
        Monitor.connect)."""
        pid = process.read_pid(files)
        if pid is None or not process.is_our_qemu(pid, vm_uuid(vm_id)):
            return None
        monitor = Monitor(f"hangar-{name}")
        try:
            await monitor.connect(
                files.qmp_socket,
                timeout=3.0,
                alive=lambda: process.is_our_qemu(pid, vm_uuid(vm_id)),
            )
        except QemuFailed:
            await monitor.close()
            log.warning("VM %s: QEMU %d is alive but its QMP socket does not answer", name, pid)
            return None
        return await self._watch(vm_id, name, files, pid, monitor)

    async def _watch(
        self, vm_id: str, name: str, files: VMFiles, pid: int, monitor: Monitor
    ) -> Runtime:
        runtime = Runtime(vm_id, name, files, pid, monitor)
        monitor.on_event(runtime.on_event)
        try:
            runtime.run_status = await monitor.status()
        except QemuFailed:
            runtime.run_status = "shutdown"  # exiting already; the pidfd tells the rest
        loop = asyncio.get_running_loop()
        loop.add_reader(runtime.pidfd, lambda: loop.create_task(self._exited(runtime)))
        self._runtimes[vm_id] = runtime
        if self._log_capper is None or self._log_capper.done():
            self._log_capper = asyncio.create_task(self._cap_serial_logs())
        return runtime

    async def _cap_serial_logs(self) -> None:
        """Rotate the serial log of each running VM past serial_log.CAP, every
        serial_log.CHECK_INTERVAL s, until no VM runs."""
        while self._runtimes:
            for runtime in list(self._runtimes.values()):
                log_file = runtime.files.serial_log
                try:
                    full = os.stat(log_file).st_size > serial_log.CAP
                except FileNotFoundError:
                    continue
                if full:
                    try:
                        await asyncio.to_thread(serial_log.rotate_if_full, log_file, serial_log.CAP)
                    except OSError as exc:
                        log.warning("VM %s: cannot rotate its serial log: %s", runtime.name, exc)
            await asyncio.sleep(serial_log.CHECK_INTERVAL)

    async def _exited(self, runtime: Runtime) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(runtime.pidfd)
        os.close(runtime.pidfd)
        await runtime.monitor.close(drain=0.5)
        await _wait_for_file(runtime.files.exit_status, EXIT_STATUS_WAIT)
        outcome = exit_outcome(
            process.read_exit_status(runtime.files),
            runtime.last_shutdown,
            runtime.stop_reason,
            process.serial_tail(runtime.files, 8),
            time.monotonic() - runtime.started,
        )
        runtime.outcome = outcome
        self._runtimes.pop(runtime.vm_id, None)
        for stale in (
            runtime.files.pidfile,
            runtime.files.qmp_socket,
            runtime.files.console_socket,
        ):
            stale.unlink(missing_ok=True)
        try:
            await self._on_exit(runtime, outcome)
        finally:
            runtime.exited.set()

    async def detach_all(self) -> None:
        """Let go of every QEMU without stopping it (hangard is shutting down)."""
        loop = asyncio.get_running_loop()
        if self._log_capper is not None:
            self._log_capper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_capper
        for runtime in list(self._runtimes.values()):
            loop.remove_reader(runtime.pidfd)
            os.close(runtime.pidfd)
            await runtime.monitor.close()
        self._runtimes.clear()


async def _wait_for_file(path: os.PathLike[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
