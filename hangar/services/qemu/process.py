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
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import QemuFailed
from hangar.host.sockets import reachable_socket, read_small_file
from hangar.services.qemu import serial_log
from hangar.services.qemu.argv import VMFiles
from hangar.services.qemu.jail import Jail, jail_argv

# "$@" is the QEMU argv. The subshell waits for QEMU and records its status
# atomically (write then rename) so a reader never sees a half-written file.
_SUPERVISE = (
    '( "$@"; echo $? > "$HANGAR_EXIT.tmp"; mv "$HANGAR_EXIT.tmp" "$HANGAR_EXIT" )'
    ' </dev/null >"$HANGAR_QEMU_LOG" 2>&1 &'
)


class QmpSockets:
    """QEMU's QMP socket, made by hangard before QEMU starts: the listening socket
    QEMU is handed (render_argv's ``qmp_fd``) and hangard's connection to it.

    hangard connects at once: the kernel queues the connection in the backlog until
    QEMU accepts it, and QEMU's greeting comes when its main loop runs. So nothing
    waits for QEMU to create a socket file (it took QEMU ~15-40 ms after exec, and a
    poll for it added its own slack). The file stays bound at ``files.qmp_socket``
    for a restarted hangard to connect to (Supervisor.adopt). It is hangard's, 0600:
    QEMU only needs the descriptor, and the VM's QEMU uid may not connect to it nor
    change its mode.

    Who holds the listening socket: hangard until QEMU is spawned, then the
    supervising shell, bwrap and QEMU, which all inherit it. When QEMU dies before
    accepting, the shell records its exit status and exits, the last holder is gone,
    and hangard's queued connection ends (EOF): hangard need not poll to notice.
    """

    def __init__(self, path: Path):
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.client: socket.socket | None = None
        try:
            self.listener.bind(os.fspath(path))
            os.chmod(path, 0o600)  # before QEMU runs: only hangard can reach it yet
            self.listener.listen(8)
            self.client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with reachable_socket(path) as target:
                self.client.connect(target)
            self.client.setblocking(False)
        except BaseException:
            self.close()
            raise

    @property
    def fd(self) -> int:
        """The listening socket's number, in hangard and (passed as is) in QEMU."""
        return self.listener.fileno()

    def take_client(self) -> socket.socket:
        """hangard's connection, for the QMP client to own from now on."""
        client, self.client = self.client, None
        assert client is not None, "the QMP connection was taken already"
        return client

    def close_listener(self) -> None:
        """hangard's copy of the listening socket: QEMU holds its own once spawned."""
        self.listener.close()

    def close(self) -> None:
        self.listener.close()
        if self.client is not None:
            self.client.close()


def open_qmp(files: VMFiles) -> QmpSockets:
    """QEMU's QMP socket at ``files.qmp_socket``, made and connected to by hangard."""
    prepare_runtime(files)
    return QmpSockets(files.qmp_socket)


def prepare_runtime(files: VMFiles) -> None:
    files.runtime.mkdir(parents=True, exist_ok=True)
    # Console, agent and VNC sockets live here: hangard's and the VM's QEMU's alone.
    files.runtime.chmod(0o700)


def spawn(
    argv: Sequence[str],
    files: VMFiles,
    jail: Jail | None = None,
    *,
    qmp: QmpSockets | None = None,
) -> None:
    """Start QEMU detached. Returns at once; QEMU is then starting (paused with -S).

    With ``jail`` QEMU runs sandboxed (jail.py); the pid in ``-pidfile`` is still
    QEMU's own (the sandbox shares hangard's pid namespace), and the supervising
    shell records bwrap's exit status, which is QEMU's. ``qmp``: the listening
    socket ``argv`` names (``fd=N``) is passed down, under the same number, through
    the shell, bwrap and setpriv (each keeps inherited descriptors open) to QEMU.
    """
    prepare_runtime(files)
    if jail is not None:
        argv = jail_argv(argv, jail)
    stale = [files.exit_status, files.pidfile, files.console_socket]
    if qmp is None:
        stale.append(files.qmp_socket)  # QEMU makes it: an old one must not answer first
    for path in stale:
        path.unlink(missing_ok=True)
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
        pass_fds=(qmp.fd,) if qmp is not None else (),
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
