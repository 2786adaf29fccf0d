"""A warm template's guest as a RAM file plus a small device-state stream.

A saved migration stream must be read whole before the guest can run: for a 1 GiB
debian-12 guest that is ~250 MiB and 0.5-5 s on this machine's disk, every launch.
So once, when a warm template is published, a helper QEMU loads the stream with its
RAM in a *shared* file (``ram.img``, sparse: zero pages take no disk), and saves again
with ``x-ignore-shared``: the new stream (``state.bin``, ~100 KiB) holds only devices.

A launch maps ``ram.img`` *private* (copy-on-write) and loads ``state.bin``: the guest
runs after tens of milliseconds, reads its memory lazily from the page cache, and never
writes the file, so every VM launched from the template shares the pages it did not
change. (The same scheme as Kata Containers' VM templating.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

from hangar.errors import QemuFailed
from hangar.runner import CommandRunner
from hangar.services.qemu import confine, img, process
from hangar.services.qemu.argv import RamFile, VMFiles, render_argv
from hangar.services.qemu.jail import Jail, jail_argv
from hangar.services.qmp import migration
from hangar.services.qmp.monitor import Monitor
from hangar.spec.host import HostFacts
from hangar.spec.vm import VMConfig

RAM = "ram.img"
STATE = "state.bin"
HELPER_START_TIMEOUT = 30.0
HELPER_EXIT_TIMEOUT = 30.0


async def split_stream(
    config: VMConfig,
    host: HostFacts,
    runner: CommandRunner,
    *,
    stream: Path,
    disk: Path,
    seed: Path | None,
    folder: Path,
    runtime: Path,
    sandbox: Path | None = None,
) -> None:
    """Turn ``stream`` (saved from a VM with ``config``) into ``folder/ram.img`` and
    ``folder/state.bin``. ``disk`` is the saved root disk (a throwaway overlay on it
    stands in for the VM's), ``seed`` the VM's cloud-init seed (the helper's devices
    match the VM's). ``runtime`` is an empty folder for the helper's sockets (short
    path). Raise :class:`QemuFailed` (with QEMU's log) if the helper fails; then
    neither file is left. ``sandbox``: the VMs' folder; the helper then runs
    sandboxed like a VM's QEMU (services/qemu/jail.py), as a uid of its own."""
    work = folder / ".helper"
    work.mkdir()
    files = VMFiles(dir=work, runtime=runtime)
    qmp: process.QmpSockets | None = None
    try:
        await asyncio.to_thread(img.create_overlay, runner, disk, files.disk, config.disk_size)
        if seed is not None:
            await asyncio.to_thread(shutil.copyfile, seed, files.seed)
        uid = confine.helper_uid(sandbox) if sandbox is not None else None
        try:
            jail: Jail | None = None
            if sandbox is not None and uid is not None:
                jail = await asyncio.to_thread(_helper_jail, sandbox, files, config, host, uid)
                jail = replace(jail, writable=(*jail.writable, folder / RAM))
            # As a VM's QEMU: QMP on a socket hangard made (process.QmpSockets).
            qmp = process.open_qmp(files)
            argv = render_argv(
                config,
                host,
                files,
                incoming=True,
                ram=RamFile(folder / RAM, shared=True),
                detached_nics=True,
                qmp_fd=qmp.fd,
            )
            if jail is not None:
                argv = jail_argv(argv, jail)
            await _convert(argv, files, stream, folder / STATE, qmp)
        finally:
            if uid is not None:
                confine.release_helper(uid)
        if sandbox is not None:
            # The template's RAM file, read by the QEMUs of VMs launched from it.
            confine.share_read_only(folder / RAM)
    except BaseException:
        (folder / RAM).unlink(missing_ok=True)
        (folder / STATE).unlink(missing_ok=True)
        raise
    finally:
        if qmp is not None:
            qmp.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


def _helper_jail(vms: Path, files: VMFiles, config: VMConfig, host: HostFacts, uid: int) -> Jail:
    ram = files.dir.parent / RAM
    ram.touch(mode=0o600)  # QEMU sizes it; it must exist to be mounted
    os.chown(ram, uid, uid)
    return confine.prepare(vms, files, config, host, uid=uid, taps=False)


async def _convert(
    argv: list[str], files: VMFiles, stream: Path, state: Path, qmp: process.QmpSockets
) -> None:
    with files.qemu_log.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(qmp.fd,),
        )
    qmp.close_listener()  # QEMU (or bwrap, its parent) holds it now
    monitor = Monitor("hangar-warm-helper")
    try:
        try:
            await monitor.attach(
                qmp.take_client(),
                timeout=HELPER_START_TIMEOUT,
                alive=lambda: proc.returncode is None,
            )
            await migration.load_memory(monitor, stream, alive=lambda: proc.returncode is None)
            await migration.save_memory(monitor, state, ram_in_file=True)
            await monitor.quit()
        except QemuFailed as exc:
            raise QemuFailed(
                f"could not turn the saved guest into a RAM file: {exc.message}",
                hint=_log_tail(files),
            ) from exc
        async with asyncio.timeout(HELPER_EXIT_TIMEOUT):
            await proc.wait()
    finally:
        await monitor.close()
        if proc.returncode is None:
            # In a sandbox, proc is bwrap: QEMU (in the pid file) would outlive it. The
            # helper's uid writes that file, so its pid is killed only if it is bwrap's.
            pid = process.read_pid(files)
            if pid is not None and process.descends_from(pid, proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _log_tail(files: VMFiles) -> str:
    try:
        lines = files.qemu_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "QEMU left no log"
    return "QEMU said: " + " / ".join(lines[-3:]) if lines else "QEMU said nothing"
