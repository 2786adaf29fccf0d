"""Snapshot routes and service on a Platform with a fake QEMU and a recording runner,
and the QMP side (memory save, root node) against the fake QMP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hangar.api.app import create_app
from hangar.errors import QemuFailed
from hangar.runner import CommandResult
from hangar.services.platform import Platform
from hangar.services.qmp import migration
from hangar.services.qmp.monitor import Monitor
from tests.component.conftest import PlatformFactory
from tests.support.apps import BothListeners
from tests.support.fake_qmp import FakeQMPServer
from tests.support.recording_runner import RecordingRunner


@pytest.fixture
def platform(make_platform: PlatformFactory) -> Platform:
    return make_platform()


@pytest.fixture
def api(platform: Platform) -> Iterator[TestClient]:
    with TestClient(BothListeners(create_app(platform))) as client:
        yield client


def wait(api: TestClient, op: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, Any] = api.get(f"/1.0/operations/{op['id']}", params={"wait": 30}).json()
    return got


def runner(platform: Platform) -> RecordingRunner:
    assert isinstance(platform.vms.runner, RecordingRunner)
    return platform.vms.runner


def answer_map(platform: Platform, *, own_data: bool) -> None:
    """qemu-img map of the VM's disk: written clusters in its top layer or not."""
    extents = [{"start": 0, "length": 65536, "depth": 0 if own_data else 1, "data": True}]

    def respond(argv: Sequence[str]) -> CommandResult:
        return CommandResult(tuple(argv), 0, json.dumps(extents), "")

    runner(platform).on(["qemu-img", "map"], respond)


def test_disk_snapshots_of_a_stopped_vm_make_a_tree(api: TestClient, platform: Platform) -> None:
    assert api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False}).is_success
    folder = platform.vms.files(platform.vms.repo.get("web").config).dir
    first_disk = platform.vms.files(platform.vms.repo.get("web").config).disk
    for name in ("one", "two"):
        op = api.post("/1.0/vms/web/snapshots", json={"name": name})
        assert op.status_code == 202 and wait(api, op.json())["status"] == "success"
    listed = api.get("/1.0/vms/web/snapshots").json()
    assert [(s["name"], s["parent"], s["current"], s["memory"]) for s in listed] == [
        ("one", None, False, False),
        ("two", "one", True, False),
    ]
    # The first snapshot froze the VM's original disk; the VM now writes to an overlay.
    overlay = platform.vms.files(platform.vms.repo.get("web").config).disk
    assert overlay != first_disk and overlay.parent == folder and first_disk.exists()
    creates = runner(platform).commands("qemu-img")
    assert any(str(first_disk.absolute()) in c for c in creates if "create" in c)

    # Restoring over changes needs force; with it the VM's disk is a new overlay of 'one'.
    answer_map(platform, own_data=True)
    refused = wait(api, api.post("/1.0/vms/web/snapshots/one/restore", json={}).json())
    assert refused["status"] == "failure" and refused["error"]["error"] == "conflict"
    assert platform.vms.files(platform.vms.repo.get("web").config).disk == overlay
    done = wait(api, api.post("/1.0/vms/web/snapshots/one/restore", json={"force": True}).json())
    assert done["status"] == "success" and done["result"]["state"] == "stopped"
    assert not overlay.exists()
    assert [s["name"] for s in api.get("/1.0/vms/web/snapshots").json() if s["current"]] == ["one"]

    # Deleting 'one' merges it into 'two' and into the VM's disk (both built on it),
    # onto what 'one' was built on.
    base = {"full-backing-filename": "/images/tiny/disk.qcow2", "virtual-size": 1}
    runner(platform).on(
        ["qemu-img", "info"], lambda argv: CommandResult(tuple(argv), 0, json.dumps(base), "")
    )
    deleted = wait(api, api.delete("/1.0/vms/web/snapshots/one").json())
    assert deleted["status"] == "success", deleted
    rebased = [c for c in runner(platform).commands("qemu-img") if "rebase" in c]
    assert len(rebased) == 2 and all("/images/tiny/disk.qcow2" in c for c in rebased)
    listed = api.get("/1.0/vms/web/snapshots").json()
    assert [(s["name"], s["parent"]) for s in listed] == [("two", None)]


def test_bad_snapshot_requests_answer_at_once_and_create_nothing(
    api: TestClient, platform: Platform
) -> None:
    assert api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False}).is_success
    folder = platform.vms.files(platform.vms.repo.get("web").config).dir
    before = sorted(folder.rglob("*"))
    assert api.post("/1.0/vms/web/snapshots", json={"name": "Bad/Name"}).status_code == 400
    assert api.post("/1.0/vms/web/snapshots", json={"name": "x", "extra": 1}).status_code == 400
    assert api.post("/1.0/vms/nope/snapshots", json={"name": "x"}).status_code == 404
    assert api.get("/1.0/vms/web/snapshots/nope").status_code == 404
    assert api.delete("/1.0/vms/web/snapshots/nope").status_code == 404
    asked = api.post("/1.0/vms/web/snapshots", json={"name": "m", "memory": True})
    memory = wait(api, asked.json())
    assert memory["status"] == "failure" and memory["error"]["error"] == "state-conflict"
    assert sorted(folder.rglob("*")) == before
    assert api.get("/1.0/vms/web/snapshots").json() == []


def test_deleting_a_vm_deletes_its_snapshots(api: TestClient, platform: Platform) -> None:
    assert api.post("/1.0/vms", json={"name": "web", "image": "tiny", "start": False}).is_success
    record = platform.vms.repo.get("web")
    assert (
        wait(api, api.post("/1.0/vms/web/snapshots", json={"name": "s"}).json())["status"]
        == "success"
    )
    folder = platform.vms.files(record.config).dir
    assert api.delete("/1.0/vms/web").status_code == 204
    assert not folder.exists()
    assert platform.db.query("SELECT COUNT(*) FROM snapshots")[0][0] == 0
    assert platform.db.query("SELECT COUNT(*) FROM snapshot_heads")[0][0] == 0


async def test_memory_is_saved_through_a_passed_fd_and_cleaned_up_on_failure(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "q.sock"
    async with FakeQMPServer(sock) as fake:
        # The copy runs, half done, until the test lets it end.
        fake.migration.hold_migration = True
        fake.migration.ram = (100, 50)
        monitor = Monitor("t")
        await monitor.connect(sock, timeout=5, alive=lambda: True)
        seen: list[float] = []
        target = tmp_path / "memory.bin"
        saving = asyncio.create_task(migration.save_memory(monitor, target, seen.append))
        await fake.wait_for_command("query-migrate")
        fake.migration.finish_migration()
        await saving
        getfd = next(c for c in fake.commands if c.name == "getfd")
        migrate = next(c for c in fake.commands if c.name == "migrate")
        assert migrate.arguments["uri"] == f"fd:{getfd.arguments['fdname']}"
        assert seen == [50.0] and target.exists()
        # It waited for QEMU's MIGRATION event, which needs the capability on.
        assert "events" in fake.migration.capabilities
        assert {"status": "completed"} in [e.get("data") for e in fake.events]

        fake.migration.hold_migration = False
        fake.migration.fail_next_migration("disk full")
        failed = tmp_path / "failed.bin"
        with pytest.raises(QemuFailed, match="disk full"):
            await migration.save_memory(monitor, failed)
        assert not failed.exists()
        await monitor.close()


async def test_a_save_fails_clearly_when_qemu_dies_during_it(tmp_path: Path) -> None:
    sock = tmp_path / "q.sock"
    async with FakeQMPServer(sock) as fake:
        fake.migration.hold_migration = True  # never ends: QEMU dies first
        monitor = Monitor("t")
        await monitor.connect(sock, timeout=5, alive=lambda: True)
        target = tmp_path / "memory.bin"
        saving = asyncio.create_task(migration.save_memory(monitor, target))
        await fake.wait_for_command("migrate")
        await fake.crash()
        with pytest.raises(QemuFailed, match="exited while hangar waited for its MIGRATION"):
            await saving
        assert not target.exists()
        await monitor.close()


async def test_a_load_waits_for_qemus_migration_event(tmp_path: Path) -> None:
    sock = tmp_path / "q.sock"
    stream = tmp_path / "memory.bin"
    stream.write_bytes(b"saved")
    async with FakeQMPServer(sock, paused=True, incoming=True) as fake:
        fake.migration.hold_migration = True
        monitor = Monitor("t")
        await monitor.connect(sock, timeout=5, alive=lambda: True)
        loading = asyncio.create_task(
            migration.load_memory(monitor, stream, alive=lambda: not fake.exited, ram_in_file=True)
        )
        await fake.wait_for_command("migrate-incoming")
        await monitor.execute("query-version")  # hangar has read the reply
        for _ in range(10):
            await asyncio.sleep(0)
        assert not loading.done() and "x-ignore-shared" in fake.migration.capabilities
        fake.migration.finish_migration()
        await loading
        assert fake.status == "paused" and fake.migration.status == "completed"
        # The event said when: the run state was read once, not polled.
        assert fake.command_names().count("query-status") == 1
        assert "x-ignore-shared" not in fake.migration.capabilities  # its snapshots load anywhere
        await monitor.close()


async def test_a_load_that_fails_reports_that_qemu_exited(tmp_path: Path) -> None:
    sock = tmp_path / "q.sock"
    stream = tmp_path / "memory.bin"
    stream.write_bytes(b"saved")
    async with FakeQMPServer(sock, paused=True, incoming=True) as fake:
        fake.migration.fail_next_migration("load of migration failed: Invalid argument")
        monitor = Monitor("t")
        await monitor.connect(sock, timeout=5, alive=lambda: True)
        with pytest.raises(QemuFailed, match="QEMU exited while loading the saved memory"):
            await migration.load_memory(monitor, stream, alive=lambda: not fake.exited)
        assert fake.exited
        await monitor.close()


async def test_the_root_node_is_the_top_of_the_root_device(tmp_path: Path) -> None:
    sock = tmp_path / "q.sock"
    devices = [
        {"device": "", "inserted": {"node-name": "root-1a2b3c4d"}},
        {"device": "", "inserted": {"node-name": "vol-0123456789ab"}},
        # debian-12 by UEFI: the seed and the two pflash drives (anonymous nodes)
        {"device": "", "inserted": {"node-name": "seed"}},
        {"device": "pflash0", "inserted": {"node-name": "#block301"}},
        {"device": "pflash1", "inserted": {"node-name": "#block549"}},
    ]
    async with FakeQMPServer(sock) as fake:
        fake.set_handler("query-block", lambda args: devices)
        monitor = Monitor("t")
        await monitor.connect(sock, timeout=5, alive=lambda: True)
        assert await migration.root_node(monitor) == "root-1a2b3c4d"
        devices.append({"device": "", "inserted": {"node-name": "root"}})
        with pytest.raises(QemuFailed, match="cannot tell the root disk"):
            await migration.root_node(monitor)
        await monitor.close()
