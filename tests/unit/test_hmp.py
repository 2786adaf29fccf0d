"""HMP lines are built from checked values only (hangar/services/qmp/hmp.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from hangar.errors import InvalidInput, QemuFailed
from hangar.services.qmp import hmp
from hangar.services.qmp.monitor import Monitor
from hangar.spec.vm import PortForward


class FakeMonitor:
    """Prints what QEMU 7.2 prints: nothing for hostfwd_add, the rule for hostfwd_remove."""

    def __init__(self, said: str | None = None) -> None:
        self.lines: list[str] = []
        self.said = said

    async def execute(self, command: str, arguments: dict[str, Any]) -> str:
        assert command == "human-monitor-command" and set(arguments) == {"command-line"}
        line = arguments["command-line"]
        self.lines.append(line)
        if self.said is not None:
            return self.said
        if line.startswith("hostfwd_remove "):
            return f"host forwarding rule for {line.split()[-1]} removed\r\n"
        return ""


def monitor(fake: FakeMonitor) -> Monitor:
    return cast(Monitor, fake)


async def test_forwards_are_spelled_as_slirp_reads_them() -> None:
    fake = FakeMonitor()
    fwd = PortForward(host_port=8080, guest_port=80)
    await hmp.hostfwd_add(monitor(fake), "net0", fwd, None)
    await hmp.hostfwd_add(
        monitor(fake), "net2", fwd.model_copy(update={"protocol": "udp"}), "10.0.2.20"
    )
    await hmp.hostfwd_remove(monitor(fake), "net0", fwd)
    assert fake.lines == [
        "hostfwd_add net0 tcp:127.0.0.1:8080-:80",
        "hostfwd_add net2 udp:127.0.0.1:8080-10.0.2.20:80",
        "hostfwd_remove net0 tcp:127.0.0.1:8080",
    ]


@pytest.mark.parametrize(
    ("netdev", "update", "guest"),
    [
        ("net0 tcp:0.0.0.0:22-:22 #", {}, None),
        ("net0,guestfwd", {}, None),
        # Values a model_construct (no validation) could carry into the line.
        ("net0", {"host_address": "127.0.0.1,guestfwd=tcp:1.2.3.4:1-cmd:sh"}, None),
        ("net0", {"host_address": "127.1"}, None),
        ("net0", {"host_port": "22 x"}, None),
        ("net0", {"guest_port": 0}, None),
        ("net0", {"protocol": "tcp:1.2.3.4:1-:1 x"}, None),
        ("net0", {}, "10.0.2.15 x"),
    ],
)
async def test_no_unchecked_text_reaches_the_line(
    netdev: str, update: dict[str, Any], guest: str | None
) -> None:
    fake = FakeMonitor()
    values = {"host_port": 8080, "guest_port": 80, "protocol": "tcp", "host_address": "127.0.0.1"}
    fwd = PortForward.model_construct(**{**values, **update})
    with pytest.raises(InvalidInput):
        await hmp.hostfwd_add(monitor(fake), netdev, fwd, guest)
    if guest is None and "guest_port" not in update:  # the host side is wrong
        with pytest.raises(InvalidInput):
            await hmp.hostfwd_remove(monitor(fake), netdev, fwd)
    assert fake.lines == []


async def test_a_forward_hmp_does_not_find_is_a_failure() -> None:
    fake = FakeMonitor(said="host forwarding rule for tcp:127.0.0.1:22 not found\r\n")
    with pytest.raises(QemuFailed, match="not found"):
        await hmp.hostfwd_remove(monitor(fake), "net0", PortForward(host_port=22, guest_port=22))


async def test_what_hmp_prints_is_a_failure() -> None:
    fake = FakeMonitor(said="could not set up host forwarding rule 'tcp:127.0.0.1:22-:22'\r\n")
    with pytest.raises(QemuFailed, match=r"QEMU refused 'hostfwd_add net0 .*could not set up"):
        await hmp.hostfwd_add(monitor(fake), "net0", PortForward(host_port=22, guest_port=22), None)
