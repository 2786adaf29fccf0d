"""The tiny image: built from Debian packages, booted with QEMU under TCG on microvm.

The image is built once per module into a temporary store; downloaded .debs are
kept in ``$HANGAR_TEST_CACHE`` (default ``/var/cache/hangar-test``) across runs.
Every guest is killed when its test ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from hangar.runner import SubprocessRunner
from hangar.services.storage.images import ImageManifest, ImageStore
from hangar.services.storage.tiny import TinyRecipe

pytestmark = pytest.mark.qemu

CACHE = Path(os.environ.get("HANGAR_TEST_CACHE", "/var/cache/hangar-test"))
BOOT_TIMEOUT = 90.0  # generous: TCG on a loaded shared host


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, ImageManifest]:
    store = ImageStore(tmp_path_factory.mktemp("images"))
    manifest, built = store.build(TinyRecipe(), _cache(), SubprocessRunner(), lambda _: None)
    assert built
    return store, manifest


def _cache() -> Path:
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        return CACHE
    except PermissionError:  # not root and no HANGAR_TEST_CACHE: a per-user cache
        fallback = Path.home() / ".cache" / "hangar-test"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _tsc_khz() -> int | None:
    # microvm has no HPET: without this, TSC calibration can hang under load.
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M)
    return int(float(match.group(1)) * 1000) if match else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Guest:
    """One QEMU process booting the tiny image, with its serial log and QMP socket."""

    def __init__(self, store: ImageStore, manifest: ImageManifest, disk: Path, name: str):
        self.dir = disk.parent
        self.log = self.dir / f"serial-{time.monotonic_ns()}.log"
        self.serial_sock = self.dir / "serial.sock"
        self.qmp_sock = self.dir / "qmp.sock"
        self.port = _free_port()
        khz = _tsc_khz()
        cmdline = " ".join(
            ["console=ttyS0", "panic=-1"]
            + ([f"tsc_early_khz={khz}"] if khz else [])
            + [f"hangar.name={name}", manifest.cmdline]
        )
        assert manifest.initrd is not None
        self.argv = [
            "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-accel", "tcg,thread=multi,tb-size=32",
            "-M", "microvm,x-option-roms=off,rtc=on,acpi=on,isa-serial=on",
            "-cpu", "qemu64", "-smp", "1", "-m", "256M",
            "-kernel", str(store.file(manifest.name, manifest.kernel)),
            "-initrd", str(store.file(manifest.name, manifest.initrd)),
            "-append", cmdline,
            "-blockdev", f"driver=file,filename={disk},node-name=f0",
            "-blockdev", "driver=qcow2,file=f0,node-name=d0",
            "-device", "virtio-blk-device,drive=d0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:80",
            "-device", "virtio-net-device,netdev=n0,mac=52:54:00:12:34:56",
            "-serial", "chardev:s0",
            "-chardev", f"socket,id=s0,path={self.serial_sock},server=on,wait=off,"
            f"logfile={self.log}",
            "-qmp", f"unix:{self.qmp_sock},server=on,wait=off",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.serial: socket.socket | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(self.serial_sock))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    message = f"QEMU's serial socket never came up: {self.argv}"
                    raise AssertionError(message) from None
                time.sleep(0.02)
        # A connected client that does not read stalls the guest's serial port:
        # drain it. The log file keeps everything, from before the connect too.
        self.serial = sock
        threading.Thread(target=self._drain, args=(sock,), daemon=True).start()

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str, since: int = 0, timeout: float = 30.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the serial log after ``since``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.output(), since)
            if match:
                return match
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                state = "timeout" if code is None else f"QEMU exited with {code}"
                raise AssertionError(
                    f"{pattern!r} not seen ({state}); serial log tail:\n{self.output()[-3000:]}"
                )
            time.sleep(0.05)

    def run(self, command: str, expect: str, timeout: float = 30.0) -> re.Match[str]:
        """Type ``command`` at the console shell and wait for ``expect`` in what follows."""
        since = len(self.output())
        assert self.serial is not None
        self.serial.sendall(command.encode() + b"\n")
        return self.wait_for(expect, since, timeout)

    def type(self, command: str) -> None:
        assert self.serial is not None
        self.serial.sendall(command.encode() + b"\n")

    def qmp(self, command: str) -> Any:
        async def call() -> Any:
            client = QMPClient("hangar-test")
            await client.connect(str(self.qmp_sock))
            try:
                return await client.execute(command)
            finally:
                await client.disconnect()

        return asyncio.run(call())

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"QEMU still running after {timeout} s; serial log tail:\n{self.output()[-3000:]}"
            ) from None

    def kill(self) -> None:
        if self.serial is not None:
            self.serial.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def booted(
    store: ImageStore, manifest: ImageManifest, disk: Path, name: str = "vm1"
) -> Iterator[Guest]:
    guest = Guest(store, manifest, disk, name)
    try:
        guest.start()
        guest.wait_for(re.escape(manifest.boot_marker), timeout=BOOT_TIMEOUT)
        yield guest
    finally:
        guest.kill()


def linked_clone(
    store: ImageStore, manifest: ImageManifest, folder: Path, size: str | None = None
) -> Path:
    base = store.file(manifest.name, manifest.disk).resolve()
    disk = folder / "disk.qcow2"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(disk)]
    subprocess.run(argv + ([size] if size else []), check=True)
    return disk


def test_image_files_and_manifest(tiny_store: tuple[ImageStore, ImageManifest]) -> None:
    store, manifest = tiny_store
    assert manifest.name == "tiny"
    assert manifest.boot_marker == "HANGAR-BOOT-COMPLETE"
    assert store.get("tiny") == manifest
    assert store.file("tiny", manifest.kernel).read_bytes()[:4] == b"\x7fELF"
    assert manifest.initrd is not None
    assert store.file("tiny", manifest.initrd).read_bytes()[:6] in (b"070701", b"\x1f\x8b\x08\x00")
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(store.file("tiny", manifest.disk))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert '"format": "qcow2"' in info
    assert f'"virtual-size": {manifest.disk_virtual_size}' in info
    assert manifest.defaults.memory == 256 * 1024 * 1024


def test_unchanged_recipe_is_not_rebuilt(tiny_store: tuple[ImageStore, ImageManifest]) -> None:
    store, manifest = tiny_store
    again, built = store.build(TinyRecipe(), _cache(), SubprocessRunner(), lambda _: None)
    assert not built
    assert again.recipe_hash == manifest.recipe_hash


def test_boot_network_http_shell_and_persistence(
    tiny_store: tuple[ImageStore, ImageManifest], tmp_path: Path
) -> None:
    store, manifest = tiny_store
    disk = linked_clone(store, manifest, tmp_path)
    with booted(store, manifest, disk, name="tiny-http-1") as guest:
        guest.wait_for(r"hangar: eth0 has address 10\.0\.2\.15/24")
        with urllib.request.urlopen(f"http://127.0.0.1:{guest.port}/", timeout=10) as reply:
            page = reply.read().decode()
        assert "tiny-http-1" in page
        guest.run("hostname", r"\ntiny-http-1\r?\n")
        # The console shell has a controlling tty: job control is on.
        guest.run("set -o | grep monitor", r"monitor\s+on")
        # Leaving the shell respawns a new one (what is typed before it starts is lost).
        guest.run("exit", r"built-in shell \(ash\)")
        guest.run("echo respawned-$((1+1))", r"respawned-2")
        # The file holds 42 while the typed line holds $((6*7)): no false match.
        guest.type("echo persisted-$((6*7)) > /root/persist.txt")
        guest.type("poweroff")
        assert guest.wait_exit(timeout=60) == 0

    with booted(store, manifest, disk, name="tiny-http-2") as guest:
        guest.run("cat /root/persist.txt", r"persisted-42")
        guest.type("reboot")
        # -no-reboot turns the guest's reboot into a QEMU exit.
        assert guest.wait_exit(timeout=60) == 0
        assert "reboot: Restarting system" in guest.output()


def test_acpi_powerdown_makes_qemu_exit(
    tiny_store: tuple[ImageStore, ImageManifest], tmp_path: Path
) -> None:
    store, manifest = tiny_store
    disk = linked_clone(store, manifest, tmp_path)
    with booted(store, manifest, disk) as guest:
        guest.qmp("system_powerdown")
        assert guest.wait_exit(timeout=60) == 0
        assert "reboot: Power down" in guest.output()


def test_root_filesystem_grows_to_the_disk(
    tiny_store: tuple[ImageStore, ImageManifest], tmp_path: Path
) -> None:
    store, manifest = tiny_store
    disk = linked_clone(store, manifest, tmp_path, size="512M")
    with booted(store, manifest, disk) as guest:
        match = guest.run("df -k / | awk 'NR==2 {print \"SIZE=\" $2}'", r"SIZE=(\d+)")
        assert int(match.group(1)) > 400 * 1024
