"""Real QEMU, real tiny image, through a real hangard: the VM lifecycle end to end."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.guest_console import GuestConsole
from tests.support.waiting import free_port, wait_for_marker, wait_state

pytestmark = pytest.mark.qemu
MARKER = "HANGAR-BOOT-COMPLETE"


@pytest.fixture
def vm(client: Client, request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """A running tiny VM with port 80 forwarded, booted to its marker; deleted afterwards."""
    name = request.node.name.replace("_", "-").lower()[:40].strip("-")
    port = free_port()
    created = client.launch(
        {
            "name": name,
            "image": "tiny",
            "nics": [{"forwards": [{"host_port": port, "guest_port": 80}]}],
        }
    )
    try:
        wait_for_marker(client, name, MARKER)
        yield {**created, "port": port}
    finally:
        try:
            client.delete(name, force=True)
        except ApiError as exc:
            if exc.status != 404:
                raise


def _console(client: Client, name: str) -> GuestConsole:
    console = GuestConsole(client.console(name))
    console.send("\n")
    return console


def test_file_written_on_console_survives_stop_and_start(client: Client, vm: dict) -> None:
    name = vm["name"]
    console = _console(client, name)
    console.run("echo persistent-$((6*7)) > /root/proof && sync")
    assert "persistent-42" in console.run("cat /root/proof")
    console.close()

    stopped = client.stop(name)
    assert stopped["method"] == "acpi", stopped  # the tiny guest obeys the power button
    assert stopped["vm"]["state"] == "stopped"

    client.start(name)
    wait_for_marker(client, name, MARKER, occurrence=2)  # the log holds both boots
    console = _console(client, name)
    assert "persistent-42" in console.run("cat /root/proof")
    console.close()


def test_forwarded_port_serves_the_guests_page(client: Client, vm: dict) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{vm['port']}/", timeout=5) as resp:
                page = resp.read().decode()
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert vm["name"] in page  # the page names the guest's hostname


def test_pause_silences_the_console_until_resume(client: Client, vm: dict) -> None:
    name = vm["name"]
    console = _console(client, name)
    console.run("true")
    assert client.pause(name)["state"] == "paused"
    console.send("echo awake-$((20+3))\n")
    quiet = console.read_for(2.0)
    assert "awake-23" not in quiet
    assert client.resume(name)["state"] == "running"
    console.expect("awake-23", timeout=15)
    console.close()


def test_force_stop(client: Client, vm: dict) -> None:
    result = client.stop(vm["name"], force=True)
    assert result["method"] == "forced"
    assert result["vm"]["state"] == "stopped" and result["vm"]["pid"] is None


def test_restart_boots_again(client: Client, vm: dict) -> None:
    first_pid = client.vm(vm["name"])["pid"]
    result = client.restart(vm["name"])
    assert result["vm"]["state"] == "running"
    assert result["vm"]["pid"] != first_pid
    wait_for_marker(client, vm["name"], MARKER, occurrence=2)


def test_killed_qemu_shows_crashed(client: Client, vm: dict) -> None:
    pid = client.vm(vm["name"])["pid"]
    os.kill(pid, signal.SIGKILL)
    crashed = wait_state(client, vm["name"], "crashed", timeout=3)
    assert "killed by signal 9" in str(crashed["state_reason"])


def test_vm_survives_hangard_kill_and_is_adopted(daemon: Daemon, client: Client, vm: dict) -> None:
    name = vm["name"]
    pid = client.vm(name)["pid"]
    daemon.kill()
    os.kill(pid, 0)  # QEMU is still there
    daemon.start()
    with daemon.client() as fresh:
        adopted = fresh.vm(name)
        assert adopted["state"] == "running" and adopted["pid"] == pid
        console = _console(fresh, name)
        assert "alive-9" in console.run("echo alive-$((3*3))")
        console.close()
        assert fresh.stop(name)["method"] == "acpi"


def _no_trace_of(daemon: Daemon, client: Client, name: str) -> None:
    assert name not in [v["name"] for v in client.vms()]
    with pytest.raises(ApiError) as info:
        client.vm(name)
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("spec", "status", "text"),
    [
        ({"name": "bad1", "image": "no-such-image"}, 404, "no image named"),
        ({"name": "a/b", "image": "tiny"}, 400, "'/'"),
        ({"name": "..", "image": "tiny"}, 400, "'..'"),
        ({"name": "x" * 64, "image": "tiny"}, 400, "64 characters"),
        ({"name": "bad2", "image": "tiny", "cpus": 512}, 400, "cpus"),
        ({"name": "bad3", "image": "tiny", "cpus": 64}, 422, "vCPUs asked for"),
        ({"name": "bad4", "image": "tiny", "memory": "100T"}, 422, "of memory asked for"),
    ],
)
def test_bad_input_creates_nothing(
    daemon: Daemon, client: Client, spec: dict, status: int, text: str
) -> None:
    before = sorted(os.listdir(daemon.home / "lib" / "vms"))
    with pytest.raises(ApiError) as info:
        client.launch(spec)
    assert info.value.status == status and text in info.value.message, info.value
    assert info.value.hint or status == 400
    assert sorted(os.listdir(daemon.home / "lib" / "vms")) == before
    if "/" not in spec["name"] and len(spec["name"]) < 64:
        _no_trace_of(daemon, client, spec["name"])


def test_duplicate_name_and_taken_port(daemon: Daemon, client: Client, vm: dict) -> None:
    before = sorted(os.listdir(daemon.home / "lib" / "vms"))
    with pytest.raises(ApiError) as dup:
        client.launch({"name": vm["name"], "image": "tiny"})
    assert dup.value.status == 409 and "already exists" in dup.value.message
    with pytest.raises(ApiError) as taken:
        client.launch(
            {
                "name": "port-thief",
                "image": "tiny",
                "nics": [{"forwards": [{"host_port": vm["port"], "guest_port": 80}]}],
            }
        )
    assert taken.value.status == 409 and f"host port {vm['port']}/tcp" in taken.value.message
    assert sorted(os.listdir(daemon.home / "lib" / "vms")) == before
    _no_trace_of(daemon, client, "port-thief")
