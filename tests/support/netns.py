"""Network namespaces for tests: a private world that is removed afterwards.

Every network test builds its world here (never in the root namespace): a
namespace for hangard and an "uplink" namespace playing the outside world,
joined by a veth pair. Teardown kills whatever still runs in them and deletes
them, also when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# The veth pair: hangard's side is the uplink of nat networks.
HOST_IF, UPLINK_IF = "upl0", "upl1"
HOST_ADDR, UPLINK_ADDR = "192.0.2.1", "192.0.2.2"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def in_ns(ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kwargs
    )


def ns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def remove(ns: str) -> None:
    """Kill every process in ``ns`` and delete it. Missing is fine."""
    for pid in ns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@dataclass(frozen=True)
class World:
    host: str  # where hangard runs
    uplink: str  # the outside world

    def python_in_uplink(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return in_ns(self.uplink, [sys.executable, "-c", code], timeout=timeout)


@contextlib.contextmanager
def world(prefix: str) -> Iterator[World]:
    names = World(host=f"{prefix}-host", uplink=f"{prefix}-up")
    for ns in (names.host, names.uplink):
        remove(ns)  # left over from a killed run
    try:
        for ns in (names.host, names.uplink):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip(
            "-n",
            names.host,
            "link",
            "add",
            HOST_IF,
            "type",
            "veth",
            "peer",
            "name",
            UPLINK_IF,
            "netns",
            names.uplink,
        )
        ip("-n", names.host, "addr", "add", f"{HOST_ADDR}/24", "dev", HOST_IF)
        ip("-n", names.host, "link", "set", HOST_IF, "up")
        ip("-n", names.uplink, "addr", "add", f"{UPLINK_ADDR}/24", "dev", UPLINK_IF)
        ip("-n", names.uplink, "link", "set", UPLINK_IF, "up")
        yield names
    finally:
        for ns in (names.host, names.uplink):
            remove(ns)
