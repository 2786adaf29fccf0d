"""Host networking for in-process tests: in-memory links and a stand-in dnsmasq.

API and service tests in the test process must never make a bridge, tap or
sysctl change in the namespace they run in (the root one, usually). They give
the network service a :class:`FakeLinks` and answer ``dnsmasq`` through the
recording runner with :func:`fake_dnsmasq`: a real process whose command line
reads like dnsmasq's, so pid files, adoption and stopping stay real code.
Tests of real netlink run in a private namespace instead (test_network_service).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from hangar.errors import HostCommandFailed
from hangar.paths import Paths
from hangar.runner import CommandResult
from hangar.services.net.links import HostInterfaces
from hangar.services.platform import Platform
from tests.support.recording_runner import RecordingRunner

# Python, named dnsmasq: it ignores SIGHUP (dnsmasq re-reads its files) and ends on
# SIGTERM. Ten minutes at most, should a test die before its teardown.
_STAND_IN = "import signal, time\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\ntime.sleep(600)"


class FakeLinks:
    """The links a network service made, in memory, on top of a fixed "host": loopback,
    an ``eth0`` uplink on 192.0.2.1/24 and a host bridge ``br0``."""

    def __init__(
        self,
        names: Iterable[str] = ("lo", "eth0"),
        bridges: Iterable[str] = ("br0",),
        addresses: Iterable[str] = ("127.0.0.1/8", "192.0.2.1/24"),
    ):
        self._lock = threading.Lock()
        self.host_names = frozenset(names)
        self.host_bridges = frozenset(bridges)
        self.host_addresses = tuple(addresses)
        self.bridges: dict[str, str | None] = {}  # made bridge -> its address/prefix
        self.taps: dict[str, str] = {}  # made tap -> its bridge
        self.forwarding = False

    def interfaces(self) -> HostInterfaces:
        with self._lock:
            names = self.host_names | self.host_bridges | set(self.bridges) | set(self.taps)
            own = tuple(a for a in self.bridges.values() if a)
            return HostInterfaces(
                frozenset(names),
                self.host_bridges | set(self.bridges),
                self.host_addresses + own,
            )

    def ensure_bridge(self, name: str, address: str | None, prefixlen: int | None) -> None:
        with self._lock:
            self.bridges[name] = f"{address}/{prefixlen}" if address and prefixlen else None

    def ensure_tap(self, name: str, bridge: str) -> None:
        with self._lock:
            if bridge not in self.bridges and bridge not in self.host_bridges:
                raise HostCommandFailed(
                    ["netlink", f"attach {name} to {bridge}"], 1, f"{bridge} vanished"
                )
            self.taps[name] = bridge

    def remove_link(self, name: str) -> None:
        with self._lock:
            self.bridges.pop(name, None)
            self.taps.pop(name, None)

    def enable_forwarding(self) -> None:
        self.forwarding = True


def fake_dnsmasq(argv: Sequence[str]) -> CommandResult:
    """Start a stand-in whose /proc cmdline looks like dnsmasq's, and write its pid file."""
    conf = next(a for a in argv if a.startswith("--conf-file="))
    pidfile = next(
        line.split("=", 1)[1]
        for line in Path(conf.split("=", 1)[1]).read_text().splitlines()
        if line.startswith("pid-file=")
    )
    proc = subprocess.Popen(
        ["dnsmasq", "-c", _STAND_IN, conf],
        executable=sys.executable,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    Path(pidfile).write_text(f"{proc.pid}\n")
    return CommandResult(tuple(argv), 0, "", "")


def fake_host_networking(platform: Platform, runner: RecordingRunner) -> FakeLinks:
    """Make ``platform``'s network service safe to use in the test process."""
    fake = FakeLinks()
    platform.networks.links = fake
    runner.on(["dnsmasq"], fake_dnsmasq)
    return fake


def stop_dnsmasqs(paths: Paths) -> None:
    """Kill every stand-in dnsmasq whose pid file lies under ``paths`` (teardown)."""
    for pidfile in (paths.state / "networks").glob("*/dnsmasq.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text())
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"dnsmasq\0-c\0"):
                os.kill(pid, signal.SIGKILL)
