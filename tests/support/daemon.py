"""Run a real hangard in a private HANGAR_HOME, as a person would: a separate process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hangar.client.client import Client
from hangar.errors import DaemonUnavailable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Shared download cache: the kernel and busybox .debs are fetched once per machine.
PACKAGE_CACHE = Path(os.environ.get("HANGAR_TEST_CACHE", "/var/cache/hangar-test"))


class Daemon:
    def __init__(
        self,
        home: Path,
        *,
        listen_port: int | None = None,
        args: Sequence[str] = (),
        netns: str | None = None,
    ):
        self.home = home
        # Run hangard inside this network namespace (``ip netns exec``): every
        # bridge, tap, dnsmasq and rule it makes lives there. The API socket is
        # a file, so clients and the CLI reach it from any namespace.
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "hangard.log"
        # HTTPS on loopback only: tests never listen on any other address.
        self.listen_port = listen_port
        self.args = list(args)
        self.config_home = home / "config"  # the CLI's XDG_CONFIG_HOME (remotes)

    @property
    def url(self) -> str:
        assert self.listen_port is not None, "this hangard was started without --listen"
        return f"https://127.0.0.1:{self.listen_port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HANGAR_HOME"] = str(self.home)
        env["HANGAR_CACHE"] = str(PACKAGE_CACHE)
        env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        for name in ("HANGAR_REMOTE", "HANGAR_PROJECT", "HANGAR_TOKEN"):
            env.pop(name, None)
        return env

    @property
    def socket(self) -> Path:
        return self.home / "run" / "api" / "hangard.sock"

    def start(self, timeout: float = 30.0) -> None:
        PACKAGE_CACHE.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
            argv = [*prefix, str(BIN / "hangard"), *self.args]
            if self.listen_port is not None:
                argv += ["--listen", f"127.0.0.1:{self.listen_port}"]
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hangard exited: {self.log.read_text()[-2000:]}")
            try:
                with self.client() as client:
                    client.host_info()
                if self.listen_port is None or _port_open(self.listen_port):
                    return
            except DaemonUnavailable:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hangard did not answer in {timeout} s")

    def client(self) -> Client:
        return Client(self.socket)

    def kill(self) -> None:
        """kill -9: hangard gets no chance to clean up (VMs must survive this)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(
        self,
        *args: str,
        input_text: str | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run the CLI against this hangard; ``env`` adds to its environment (e.g. HOME)."""
        proc = subprocess.run(
            [str(BIN / "hangar"), *args],
            env={**self.env, **(env or {})},
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(args, proc.returncode, proc.stdout, proc.stderr)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Result:
    def __init__(self, args: Sequence[str], code: int, stdout: str, stderr: str):
        self.args = args
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"hangar {' '.join(self.args)} -> {self.code}\n{self.stdout}\n{self.stderr}"


def kill_vm_processes(home: Path) -> None:
    """Kill every QEMU whose pid file lies under ``home`` (test teardown)."""
    for pidfile in (home / "run" / "vm").glob("*/qemu.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, FileNotFoundError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
