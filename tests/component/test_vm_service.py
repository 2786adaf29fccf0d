"""The VM lifecycle service against a fake QEMU (real processes, fake QMP and guest)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from hangar.errors import Conflict, InvalidInput, NotFound, QemuFailed, ResourceLimit, StateConflict
from hangar.services.lifecycle import PowerState
from hangar.services.platform import Platform
from hangar.services.qemu import process, serial_log
from hangar.spec.vm import VMCreate
from tests.component.conftest import PlatformFactory


async def _state(platform: Platform, name: str) -> PowerState:
    return (await platform.vms.get(name)).state


async def _wait_state(platform: Platform, name: str, want: PowerState, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while await _state(platform, name) is not want:
            await asyncio.sleep(0.02)


def _leftovers(platform: Platform) -> list[str]:
    found = [p.name for p in platform.paths.vms.iterdir()]
    found += [p.name for p in (platform.paths.runtime / "vm").iterdir() if any(p.iterdir())]
    found += [r.name for r in platform.vms.repo.list()]
    return found


async def test_launch_pause_resume_stop(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    await platform.start()
    vm = await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert vm.state is PowerState.RUNNING and vm.pid is not None
    assert (await platform.vms.pause("web")).state is PowerState.PAUSED
    with pytest.raises(StateConflict, match="it is paused"):
        await platform.vms.pause("web")
    assert (await platform.vms.resume("web")).state is PowerState.RUNNING
    result = await platform.vms.stop("web")
    assert result.method == "acpi" and result.vm.state is PowerState.STOPPED
    assert "ACPI" in result.vm.state_reason
    # a stopped VM starts again
    assert (await platform.vms.start("web")).state is PowerState.RUNNING


async def test_create_uses_a_linked_clone_with_explicit_formats(
    make_platform: PlatformFactory,
) -> None:
    platform = make_platform()
    await platform.vms.create(VMCreate(name="web", image="tiny", disk="2G"), start=False)
    runner = platform.vms.runner
    (create,) = runner.commands("qemu-img")  # type: ignore[attr-defined]
    assert create[:3] == ("qemu-img", "create", "-q")
    assert create[3:5] == ("-f", "qcow2") and create[5:7] == ("-F", "qcow2")
    assert create[-1] == str(2 * 1024**3)
    assert await _state(platform, "web") is PowerState.STOPPED


async def test_acpi_ignored_is_forced_after_timeout(make_platform: PlatformFactory) -> None:
    platform = make_platform(FAKE_QEMU_POWERDOWN="ignore")
    await platform.vms.create(VMCreate(name="stubborn", image="tiny"))
    result = await platform.vms.stop("stubborn", timeout=0.3)
    assert result.method == "forced-after-timeout"
    assert result.vm.state is PowerState.STOPPED
    assert "ignored the ACPI power button" in result.vm.state_reason


async def test_force_stop(make_platform: PlatformFactory) -> None:
    platform = make_platform(FAKE_QEMU_POWERDOWN="ignore")
    await platform.vms.create(VMCreate(name="web", image="tiny"))
    result = await platform.vms.stop("web", force=True)
    assert result.method == "forced" and result.vm.state is PowerState.STOPPED


async def test_killed_qemu_is_noticed_as_crashed(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    vm = await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert vm.pid is not None
    async with asyncio.timeout(5):
        while "HANGAR-BOOT-COMPLETE" not in Path(vm.serial_log).read_text(errors="replace"):
            await asyncio.sleep(0.02)
    os.kill(vm.pid, signal.SIGKILL)
    await _wait_state(platform, "web", PowerState.CRASHED, timeout=2)
    got = await platform.vms.get("web")
    assert "killed by signal 9 (SIGKILL)" in got.state_reason
    assert "HANGAR-BOOT-COMPLETE" in got.state_reason  # the serial tail comes along
    # a crashed VM can start again
    assert (await platform.vms.start("web")).state is PowerState.RUNNING


async def test_guest_poweroff_is_a_clean_stop(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    vm = await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert vm.pid is not None
    os.kill(vm.pid, signal.SIGUSR1)  # the fake guest shuts itself down
    await _wait_state(platform, "web", PowerState.STOPPED, timeout=2)
    assert "powered off" in (await platform.vms.get("web")).state_reason


async def test_sigterm_to_qemu_is_a_clean_stop(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    vm = await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert vm.pid is not None
    os.kill(vm.pid, signal.SIGTERM)
    await _wait_state(platform, "web", PowerState.STOPPED, timeout=2)
    assert "quit by a signal" in (await platform.vms.get("web")).state_reason


async def test_restarted_daemon_adopts_running_vm(make_platform: PlatformFactory) -> None:
    first = make_platform()
    vm = await first.vms.create(VMCreate(name="web", image="tiny"))
    await first.vms.shutdown()  # hangard goes away; QEMU keeps running
    assert vm.pid is not None
    os.kill(vm.pid, 0)

    second = make_platform()
    await second.start()
    adopted = await second.vms.get("web")
    assert adopted.state is PowerState.RUNNING and adopted.pid == vm.pid
    assert (await second.vms.pause("web")).state is PowerState.PAUSED
    result = await second.vms.stop("web")
    assert result.method == "acpi"


async def test_vm_killed_while_daemon_away_is_crashed(make_platform: PlatformFactory) -> None:
    first = make_platform()
    vm = await first.vms.create(VMCreate(name="web", image="tiny"))
    await first.vms.shutdown()
    assert vm.pid is not None
    os.kill(vm.pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    second = make_platform()
    await second.start()
    got = await second.vms.get("web")
    assert got.state is PowerState.CRASHED
    assert "signal 9" in got.state_reason and "while hangard was away" in got.state_reason


async def test_delete_removes_everything(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    await platform.vms.create(VMCreate(name="web", image="tiny"))
    with pytest.raises(StateConflict, match="it is running"):
        await platform.vms.delete("web")
    await platform.vms.delete("web", force=True)
    assert _leftovers(platform) == []
    with pytest.raises(NotFound):
        await platform.vms.get("web")


@pytest.mark.parametrize(
    ("spec", "error", "text"),
    [
        ({"name": "web", "image": "nope"}, NotFound, "no image named 'nope'"),
        ({"name": "a/b", "image": "tiny"}, InvalidInput, "'/'"),
        ({"name": "..", "image": "tiny"}, InvalidInput, "'..'"),
        ({"name": "x" * 64, "image": "tiny"}, InvalidInput, "64 characters"),
        ({"name": "web", "image": "tiny", "cpus": 64}, ResourceLimit, "vCPUs"),
        ({"name": "web", "image": "tiny", "memory": 1024**4}, ResourceLimit, "memory"),
    ],
)
async def test_bad_input_creates_nothing(
    make_platform: PlatformFactory, spec: dict[str, object], error: type[Exception], text: str
) -> None:
    platform = make_platform()
    with pytest.raises(error, match=text):
        await platform.vms.create(VMCreate.model_validate(spec))
    assert _leftovers(platform) == []


async def test_duplicate_name_creates_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    await platform.vms.create(VMCreate(name="web", image="tiny"), start=False)
    with pytest.raises(Conflict, match="already exists"):
        await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert len(platform.vms.repo.list()) == 1
    assert len(list(platform.paths.vms.iterdir())) == 1


async def test_taken_host_port_creates_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = VMCreate.model_validate(
            {
                "name": "web",
                "image": "tiny",
                "nics": [{"forwards": [{"host_port": port, "guest_port": 80}]}],
            }
        )
        with pytest.raises(Conflict, match=f"host port {port}/tcp"):
            await platform.vms.create(spec)
    assert _leftovers(platform) == []


async def test_qemu_that_fails_to_start_leaves_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform(FAKE_QEMU_FAIL="-device foo: unknown device")
    with pytest.raises(QemuFailed, match="unknown device"):
        await platform.vms.create(VMCreate(name="web", image="tiny"))
    assert _leftovers(platform) == []


async def test_a_guest_flooding_its_console_cannot_grow_the_log_without_bound(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14, item 6: serial.log had no cap (~290 KiB/s from a guest). The guest's
    output is appended as QEMU does (O_APPEND); hangard's supervisor rotates it."""
    monkeypatch.setattr(serial_log, "CAP", 64 * 1024)
    monkeypatch.setattr(serial_log, "CHECK_INTERVAL", 0.02)
    platform = make_platform()
    vm = await platform.vms.create(VMCreate(name="chatty", image="tiny"))
    log = Path(vm.serial_log)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(40):  # 40 x 16 KiB = 640 KiB, ten times the cap
            os.write(fd, (b"flood %03d " % i) + b"x" * (16 * 1024 - 10) + b"\n")
            await asyncio.sleep(0.005)
        async with asyncio.timeout(5):
            while log.stat().st_size > serial_log.CAP:
                await asyncio.sleep(0.01)
        os.write(fd, b"the last line\n")
    finally:
        os.close(fd)
    kept = log.stat().st_size + serial_log.rotated(log).stat().st_size
    assert kept <= 2 * serial_log.CAP + 16 * 1024 * 10
    assert process.serial_tail(platform.vms.files(
        platform.vms.repo.get("chatty").config), 1) == ["the last line"]  # fmt: skip
