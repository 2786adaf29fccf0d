"""Waiting on QEMU's events (Monitor.expect) against the fake QMP server: unplugging
a volume or NIC waits for DEVICE_DELETED, a disk copy for its job's end, and each
fails clearly when the event does not come; and HMP's forwards as QEMU 7.2 answers them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hangar.errors import Conflict, QemuFailed
from hangar.services.qemu import hotplug
from hangar.services.qemu.argv import nic_device
from hangar.services.qmp import backup, hmp
from hangar.services.qmp.monitor import Monitor
from hangar.spec.vm import DataDisk, PortForward
from tests.support.factories import warm_state
from tests.support.fake_qmp import FakeQMPServer, QMPCommandError

DISK = DataDisk(volume="ab" * 16, path="/pools/p1/data.qcow2", format="qcow2")
NODE = "vol-abababababab"


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeQMPServer]:
    async with FakeQMPServer(tmp_path / "q.sock") as server:
        yield server


@pytest.fixture
async def monitor(fake: FakeQMPServer) -> AsyncIterator[Monitor]:
    client = Monitor("t")
    await client.connect(fake.path, timeout=5, alive=lambda: True)
    yield client
    await client.close()


async def settled(monitor: Monitor) -> None:
    """Return once hangar has read all QEMU sent so far (a reply comes after the
    events before it) and its tasks have run on them."""
    await monitor.execute("query-status")
    for _ in range(10):
        await asyncio.sleep(0)


def blockdev_del(fake: FakeQMPServer) -> list[str]:
    """Answer blockdev-del as QEMU does once nothing uses the node; return the list of
    nodes closed. It refuses while the device still exists (holds the node)."""
    closed: list[str] = []

    def handle(args: dict[str, Any]) -> dict[str, Any]:
        if NODE in fake.devices.devices:
            raise QMPCommandError("GenericError", f"Node '{NODE}' is busy: block device is in use")
        closed.append(str(args["node-name"]))
        return {}

    fake.set_handler("blockdev-del", handle)
    return closed


async def test_unplugging_a_volume_waits_for_the_guest_to_let_go(
    fake: FakeQMPServer, monitor: Monitor
) -> None:
    fake.devices.devices[NODE] = "virtio-blk-pci"
    fake.devices.unplug_delay = None  # the guest acks when the test says
    closed = blockdev_del(fake)
    unplugging = asyncio.create_task(hotplug.unplug(monitor, DISK))
    await fake.wait_for_command("device_del")
    await settled(monitor)
    assert not unplugging.done() and closed == []  # still the guest's
    fake.emit_event("DEVICE_DELETED", {"path": f"/machine/peripheral/{NODE}/virtio-backend"})
    await settled(monitor)
    assert not unplugging.done()  # the backend child's event does not count
    del fake.devices.devices[NODE]
    fake.emit_event("DEVICE_DELETED", {"device": NODE, "path": f"/machine/peripheral/{NODE}"})
    await unplugging
    assert closed == [NODE, f"{NODE}-file"]
    # Nothing polled: one device_del, and a blockdev-del only once the device went.
    assert fake.command_names().count("blockdev-del") == 2


async def test_an_unplug_the_guest_acks_at_once_is_not_missed(
    fake: FakeQMPServer, monitor: Monitor
) -> None:
    # The fake's guest acks before hangar reads device_del's reply.
    fake.devices.devices[NODE] = "virtio-blk-pci"
    closed = blockdev_del(fake)
    await hotplug.unplug(monitor, DISK)
    assert closed == [NODE, f"{NODE}-file"]
    assert [e["data"] for e in fake.events if e["event"] == "DEVICE_DELETED"] == [
        {"path": f"/machine/peripheral/{NODE}/virtio-backend"},
        {"device": NODE, "path": f"/machine/peripheral/{NODE}"},
    ]


async def test_an_unplug_the_guest_never_acks_fails_and_keeps_the_volume(
    fake: FakeQMPServer, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotplug, "UNPLUG_TIMEOUT", 0.2)
    fake.devices.devices[NODE] = "virtio-blk-pci"
    fake.devices.unplug_delay = None
    closed = blockdev_del(fake)
    with pytest.raises(Conflict, match=f"did not release volume device {NODE} in 0.2 s"):
        await hotplug.unplug(monitor, DISK)
    assert closed == [] and "blockdev-del" not in fake.command_names()


async def test_unplugging_a_nic_closes_its_tap_once_the_device_is_gone(
    fake: FakeQMPServer, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = warm_state().config.model_copy(update={"machine": "q35"})
    nic = config.nics[0]
    device = nic_device(config, 0, nic)
    fake.devices.devices[device["id"]] = device["driver"]
    fake.set_handler("netdev_del", lambda args: {})
    fake.devices.unplug_delay = 0.05
    await hotplug.unplug_nic(monitor, config, 0, nic)
    assert fake.command_names()[-2:] == ["device_del", "netdev_del"]
    assert device["id"] not in fake.devices.devices
    assert "qom-get" not in fake.command_names()

    monkeypatch.setattr(hotplug, "UNPLUG_TIMEOUT", 0.2)
    fake.devices.devices[device["id"]] = device["driver"]
    fake.devices.unplug_delay = None
    with pytest.raises(Conflict, match=f"did not release NIC {device['id']}"):
        await hotplug.unplug_nic(monitor, config, 0, nic)
    assert fake.command_names()[-1] == "device_del"


async def test_an_unplug_fails_clearly_when_qemu_exits_meanwhile(
    fake: FakeQMPServer, monitor: Monitor
) -> None:
    fake.devices.devices[NODE] = "virtio-blk-pci"
    fake.devices.unplug_delay = None
    unplugging = asyncio.create_task(hotplug.unplug(monitor, DISK))
    await fake.wait_for_command("device_del")
    await fake.crash()
    with pytest.raises(QemuFailed, match="exited while hangar waited for its DEVICE_DELETED"):
        await unplugging


def disk_copy_plumbing(fake: FakeQMPServer) -> None:
    """What a backup needs besides the job: the target's descriptor and node."""
    fake.set_handler("add-fd", lambda args: {"fdset-id": 1, "fd": 30})
    fake.set_handler("remove-fd", lambda args: {})
    fake.set_handler("blockdev-add", lambda args: {})
    fake.set_handler("blockdev-del", lambda args: {})
    fake.set_handler(
        "query-block", lambda args: [{"device": "", "inserted": {"node-name": "root"}}]
    )


async def test_a_disk_copy_waits_for_its_job_and_reports_progress(
    fake: FakeQMPServer, monitor: Monitor, tmp_path: Path
) -> None:
    disk_copy_plumbing(fake)
    fake.jobs.hold_jobs = True
    target = tmp_path / "copy.qcow2"
    target.touch()
    seen: list[float] = []
    copying = asyncio.create_task(backup.backup(monitor, target, sync="full", progress=seen.append))
    await fake.wait_for_command("query-jobs")
    (job,) = fake.jobs.jobs
    fake.jobs.finish_job(job)
    await copying
    assert seen == [50.0]
    statuses = [e["data"]["status"] for e in fake.events if e["event"] == "JOB_STATUS_CHANGE"]
    assert statuses == ["created", "running", "waiting", "pending", "concluded", "null"]
    assert fake.jobs.jobs == {}  # dismissed
    assert fake.command_names()[-2:] == ["job-dismiss", "blockdev-del"]


async def test_a_disk_copy_whose_job_aborts_reports_qemus_error(
    fake: FakeQMPServer, monitor: Monitor, tmp_path: Path
) -> None:
    disk_copy_plumbing(fake)
    fake.jobs.hold_jobs = True
    fake.jobs.fail_next_job("Could not write to the target: No space left on device")
    target = tmp_path / "copy.qcow2"
    target.touch()
    copying = asyncio.create_task(backup.backup(monitor, target, sync="full"))
    await fake.wait_for_command("blockdev-backup")
    await settled(monitor)
    (job,) = fake.jobs.jobs
    fake.jobs.finish_job(job)
    with pytest.raises(QemuFailed, match=r"copying the running disk failed: .*No space left"):
        await copying
    # Nobody watched its progress: query-jobs only once it ended, for its error.
    assert fake.command_names().count("query-jobs") == 1
    statuses = [e["data"]["status"] for e in fake.events if e["event"] == "JOB_STATUS_CHANGE"]
    assert statuses == ["created", "running", "aborting", "concluded", "null"]
    assert fake.jobs.jobs == {}
    assert fake.command_names()[-1] == "blockdev-del"


async def test_a_cancelled_disk_copy_cancels_its_job(
    fake: FakeQMPServer, monitor: Monitor, tmp_path: Path
) -> None:
    disk_copy_plumbing(fake)
    fake.jobs.hold_jobs = True
    target = tmp_path / "copy.qcow2"
    target.touch()

    def cancelled(percent: float) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await backup.backup(monitor, target, sync="full", progress=cancelled)
    assert "job-cancel" in fake.command_names()
    assert fake.jobs.jobs == {}


async def test_an_event_sent_with_the_reply_is_not_missed(
    fake: FakeQMPServer, monitor: Monitor
) -> None:
    # QEMU may send the event before the command's reply: the waiter listens from
    # the start of the block, and other events or other data do not match.
    def kick(args: dict[str, Any]) -> dict[str, Any]:
        fake.emit_event("KICKED", {"n": 0})
        fake.emit_event("OTHER", {"n": 1})
        fake.emit_event("KICKED", {"n": 1})
        return {}

    fake.set_handler("kick", kick)
    async with monitor.expect("KICKED", lambda data: data.get("n") == 1) as kicked:
        await monitor.execute("kick")
        assert await kicked.wait(5) == {"n": 1}
        with pytest.raises(QemuFailed, match=r"QEMU sent no KICKED event in 0\.05 s"):
            await kicked.wait(0.05)
        await fake.crash()
        with pytest.raises(QemuFailed, match="QEMU exited while hangar waited for its KICKED"):
            await kicked.wait(5)


async def test_forwards_through_hmp_on_the_fake(fake: FakeQMPServer, monitor: Monitor) -> None:
    fwd = PortForward(host_port=8080, guest_port=80)
    await hmp.hostfwd_add(monitor, "net0", fwd, None)
    assert fake.hostfwds == {("net0", "tcp:127.0.0.1:8080")}
    with pytest.raises(QemuFailed, match="Could not set up host forwarding rule"):
        await hmp.hostfwd_add(monitor, "net0", fwd, "10.0.2.15")
    await hmp.hostfwd_remove(monitor, "net0", fwd)
    assert fake.hostfwds == set()
    with pytest.raises(QemuFailed, match="not found"):
        await hmp.hostfwd_remove(monitor, "net0", fwd)
