"""Starting QEMU detached from hangard, and reading what it left behind.

QEMU must outlive hangard (restarting the daemon never stops a VM), yet hangard
must learn QEMU's exit status even when it was not QEMU's parent (after a
restart it adopts running VMs). So QEMU is started under a one-line ``sh``
that waits for it and writes its exit status to a file; the shell is
double-forked into its own session and reparented to init. dash costs ~0.6 MB
per VM. hangard watches QEMU itself through a pidfd, which works for any
process, child or not.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import QemuFailed
from hangar.host.sockets import read_small_file
from hangar.services.qemu import serial_log
from hangar.services.qemu.argv import VMFiles
from hangar.services.qemu.jail import Jail, jail_argv

# "$@" is the QEMU argv. The subshell waits for QEMU and records its status
# atomically (write then rename) so a reader never sees a half-written file.
_SUPERVISE = (
    '( "$@"; echo $? > "$HANGAR_EXIT.tmp"; mv "$HANGAR_EXIT.tmp" "$HANGAR_EXIT" )'
    ' </dev/null >"$HANGAR_QEMU_LOG" 2>&1 &'
)


def spawn(argv: Sequence[str], files: VMFiles, jail: Jail | None = None) -> None:
    """Start QEMU detached. Returns at once; QEMU is then starting (paused with -S).

    With ``jail`` QEMU runs sandboxed (jail.py); the pid in ``-pidfile`` is still
    QEMU's own (the sandbox shares hangard's pid namespace), and the supervising
    shell records bwrap's exit status, which is QEMU's.
    """
    files.runtime.mkdir(parents=True, exist_ok=True)
    # Console, agent and VNC sockets live here: hangard's and the VM's QEMU's alone.
    files.runtime.chmod(0o700)
    if jail is not None:
        argv = jail_argv(argv, jail)
    for stale in (files.exit_status, files.pidfile, files.qmp_socket, files.console_socket):
        stale.unlink(missing_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HANGAR_EXIT": str(files.exit_status),
        "HANGAR_QEMU_LOG": str(files.qemu_log),
    }
    subprocess.run(
        ["/bin/sh", "-c", _SUPERVISE, "hangar-qemu", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        check=True,
    )


@dataclass(frozen=True)
class ExitStatus:
    code: int | None
    signal: int | None

    @classmethod
    def parse(cls, text: str) -> ExitStatus:
        value = int(text.strip())
        # sh reports death by signal N as 128+N.
        if value > 128:
            return cls(code=None, signal=value - 128)
        return cls(code=value, signal=None)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"QEMU was killed by signal {self.signal} ({name})"
        return f"QEMU exited with status {self.code}"

    @property
    def clean(self) -> bool:
        return self.code == 0


def read_exit_status(files: VMFiles) -> ExitStatus | None:
    try:
        return ExitStatus.parse(files.exit_status.read_text())
    except (FileNotFoundError, ValueError):
        return None


def read_pid(files: VMFiles) -> int | None:
    try:
        return int(read_small_file(files.pidfile).strip())
    except (OSError, ValueError):
        return None


def descends_from(pid: int, ancestor: int, depth: int = 4) -> bool:
    """True if ``pid`` is ``ancestor``'s child or grandchild (and so on, ``depth`` deep).
    A pid read from a file a QEMU could write is killed only when it passes this."""
    for _ in range(depth):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        pid = int(stat.rsplit(")", 1)[-1].split()[1])
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def is_our_qemu(pid: int, vm_uuid: str) -> bool:
    """True if ``pid`` is alive and is the QEMU of the VM with ``vm_uuid`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return b"-uuid" in cmdline and vm_uuid.encode() in cmdline


def qemu_log_tail(files: VMFiles, limit: int = 2000) -> str:
    try:
        return files.qemu_log.read_text(errors="replace")[-limit:].strip()
    except FileNotFoundError:
        return ""


def serial_tail(files: VMFiles, lines: int = 10) -> list[str]:
    """The last ``lines`` lines of the serial log (reads only the end of the file)."""
    data, _ = serial_log.tail(files.serial_log, lines, window=8192)
    text = data.decode(errors="replace").replace("\r", "")
    return [line for line in text.split("\n") if line.strip()][-lines:]


def failed_to_start(files: VMFiles, why: str) -> QemuFailed:
    log = qemu_log_tail(files)
    return QemuFailed(
        f"QEMU failed to start: {why}" + (f"\n{log}" if log else ""),
        hint=f"QEMU's messages are in {files.qemu_log}",
        details={"qemu_log": log},
    )
