"""The hangar CLI as a person uses it, against a real hangard and real QEMU."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import BIN, Daemon
from tests.support.waiting import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]


def test_host_info_names_the_accelerator_and_why(daemon: Daemon) -> None:
    table = daemon.cli("host", "info")
    assert table.code == 0, table
    assert "accelerator" in table.stdout and "why" in table.stdout
    facts = json.loads(daemon.cli("host", "info", "--format", "json").stdout)
    assert facts["accelerator"] in ("kvm", "tcg") and facts["accelerator_reason"]
    if not Path("/dev/kvm").exists():
        assert facts["accelerator"] == "tcg"


def test_image_list_and_rebuild_is_cached(daemon: Daemon) -> None:
    listed = daemon.cli("image", "list")
    assert listed.code == 0 and "tiny" in listed.stdout
    again = daemon.cli("image", "build", "tiny")
    assert again.code == 0 and "up to date" in again.stdout, again


def test_launch_use_and_delete_through_the_cli(daemon: Daemon) -> None:
    port = free_port()
    launched = daemon.cli(
        "launch", "tiny", "cli-vm", "--memory", "192M", "--forward", f"{port}:80", "--wait"
    )
    assert launched.code == 0, launched
    assert "is running and booted" in launched.stdout
    assert f"http://127.0.0.1:{port}/" in launched.stdout
    try:
        with daemon.client() as client:
            # --wait returned only after the boot marker
            assert "HANGAR-BOOT-COMPLETE" in client.logs("cli-vm")

        rows = json.loads(daemon.cli("list", "--format", "json").stdout)
        (row,) = [r for r in rows if r["name"] == "cli-vm"]
        assert row["state"] == "running" and row["memory"] == 192 * 1024**2

        table = daemon.cli("list").stdout
        assert "cli-vm" in table and "running" in table and "192M" in table
        info = daemon.cli("info", "cli-vm").stdout
        assert "running" in info and f"127.0.0.1:{port}->80/tcp" in info

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert "cli-vm" in resp.read().decode()

        # The console with piped input, as a script would use it.
        console = daemon.cli("console", "cli-vm", input_text="\necho cli-$((40+2))\n", timeout=60)
        assert console.code == 0, console
        assert "cli-42" in console.stdout

        logs = daemon.cli("logs", "cli-vm", "--lines", "500")
        assert "HANGAR-BOOT-COMPLETE" in logs.stdout

        paused = daemon.cli("pause", "cli-vm")
        assert "is paused" in paused.stdout
        refused = daemon.cli("pause", "cli-vm")
        assert refused.code == 4
        assert "it is paused" in refused.stderr and "running" in refused.stderr
        assert "is running" in daemon.cli("resume", "cli-vm").stdout

        stopped = daemon.cli("stop", "cli-vm")
        assert stopped.code == 0, stopped
        assert "is stopped" in stopped.stdout and "ACPI" in stopped.stdout

        started = daemon.cli("start", "cli-vm", "--wait")
        assert started.code == 0 and "is running and booted" in started.stdout, started
        with daemon.client() as client:
            assert client.logs("cli-vm", lines=100000).count("HANGAR-BOOT-COMPLETE") == 2
    finally:
        deleted = daemon.cli("delete", "cli-vm", "--force")
    assert deleted.code == 0, deleted
    assert "cli-vm" not in daemon.cli("list").stdout


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("launch", "nope", "x1"), 3, "no image named 'nope'"),
        (("launch", "tiny", "a/b"), 2, "contains '/' or '..'"),
        (("launch", "tiny", "x" * 64), 2, "64 characters"),
        (("launch", "tiny", "x2", "--cpus", "64"), 5, "vCPUs asked for"),
        (("launch", "tiny", "x3", "--memory", "lots"), 2, "'lots' is not a size"),
        (("launch", "tiny", "x4", "--forward", "80"), 2, "is not HOSTPORT:GUESTPORT"),
        (("info", "ghost"), 3, "no VM named 'ghost'"),
        (("start", "ghost"), 3, "no VM named 'ghost'"),
    ],
)
def test_bad_input_is_a_clear_error(
    daemon: Daemon, args: tuple[str, ...], code: int, text: str
) -> None:
    before = daemon.cli("list", "--format", "json").stdout
    result = daemon.cli(*args)
    assert result.code == code, result
    assert "error:" in result.stderr and text in result.stderr, result
    assert "Traceback" not in result.stderr
    assert daemon.cli("list", "--format", "json").stdout == before


def test_cli_without_daemon_says_how_to_start_it() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HANGAR_HOME": home}
        proc = subprocess.run(
            [str(BIN / "hangar"), "list"], env=env, capture_output=True, text=True
        )
    assert proc.returncode == 6
    assert "hangard is not running" in proc.stderr and "hangard" in proc.stderr.split("hint:")[1]
