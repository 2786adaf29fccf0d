"""An ISO install end to end: a real installer ISO (a live tiny system built from Debian
packages, tests/support/installer_iso.py) installs onto a blank disk and powers off;
hangard detaches the ISO; the VM then boots from its disk alone. Its VGA screen is
served as PNG and as a VNC stream through hangard."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import Client
from tests.support.daemon import PACKAGE_CACHE, Daemon
from tests.support.installer_iso import DONE, build_installer_iso
from tests.support.png import parse_png
from tests.support.waiting import wait_for_marker, wait_state

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def installer(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("installer")
    yield build_installer_iso(daemon.home / "lib" / "images" / "tiny", PACKAGE_CACHE, work)


def _rfb_server_init(client: Client, name: str) -> tuple[int, int]:
    """Speak RFB 3.8 through hangard's VNC websocket up to ServerInit: the screen size."""
    with client.websocket(f"/1.0/vms/{name}/vnc") as ws:
        buffer = b""

        def read(n: int) -> bytes:
            nonlocal buffer
            while len(buffer) < n:
                data = ws.recv(timeout=30)
                buffer += data if isinstance(data, bytes) else data.encode()
            head, buffer = buffer[:n], buffer[n:]
            return head

        assert read(12) == b"RFB 003.008\n"
        ws.send(b"RFB 003.008\n")
        (count,) = read(1)
        types = read(count)
        assert 1 in types, types  # "None": the socket is private, hangard authorises
        ws.send(b"\x01")
        assert read(4) == b"\x00\x00\x00\x00"  # SecurityResult OK
        ws.send(b"\x01")  # ClientInit, shared
        width, height = struct.unpack(">HH", read(4))
        return width, height


def test_iso_install_then_boot_from_disk(client: Client, daemon: Daemon, installer: Path) -> None:
    launched = daemon.cli("launch", "--iso", str(installer), "--disk", "8G", "--memory", "512M",
                          "inst")  # fmt: skip
    assert launched.code == 0, launched
    try:
        vm = client.vm("inst")
        assert vm["iso"] == "installer.iso" and vm["firmware"] == "bios" and vm["graphics"]
        wait_for_marker(client, "inst", DONE, timeout=300)
        stopped = wait_state(client, "inst", "stopped", timeout=120)
        assert stopped["iso"] is None, stopped
        assert "installer ISO 'installer.iso' detached" in str(stopped["state_reason"])
        assert installer.exists()

        assert daemon.cli("start", "inst").code == 0
        # The installed system: SeaBIOS -> SYSLINUX on the disk -> the tiny userland.
        log = wait_for_marker(client, "inst", "HANGAR-BOOT-COMPLETE", timeout=300)
        # The kernel command line of SYSLINUX's config on the disk (the ISO's lacks it).
        assert "hangar.name=installed" in log.split("HANGAR-INSTALLER: done")[-1]

        shot = daemon.home / "screen.png"
        saved = daemon.cli("screenshot", "inst", str(shot))
        assert saved.code == 0, saved
        png = parse_png(shot.read_bytes())
        # VGA text mode is 720x400; the guest's kernel log is on it: grey text on black,
        # not a blank screen.
        assert (png.width, png.height) == (720, 400)
        lit = sum(1 for byte in png.raw if byte)
        assert 1000 < lit < len(png.raw) // 2, lit
        assert _rfb_server_init(client, "inst") == (png.width, png.height)
    finally:
        daemon.cli("delete", "--force", "inst")
