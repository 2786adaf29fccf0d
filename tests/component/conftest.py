"""Component fixtures: a VMService on a temporary home, QEMU replaced by tests/support/fake_qemu."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from hangar.paths import Paths
from hangar.services.platform import Platform
from hangar.spec.image import ImageManifest
from tests.support.daemon import kill_vm_processes
from tests.support.factories import host_facts, tiny_manifest
from tests.support.fake_net import fake_host_networking, stop_dnsmasqs
from tests.support.recording_runner import RecordingRunner

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home() -> Iterator[Path]:
    # Short path: unix socket paths must stay under 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="hg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fake_qemu(home: Path, **env: str) -> Path:
    script = home / f"fake-qemu-{len(list(home.glob('fake-qemu-*')))}"
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    script.write_text(
        f"#!/bin/sh\n{exports}export PYTHONPATH='{REPO}'\n"
        f'exec {sys.executable} -m tests.support.fake_qemu "$@"\n'
    )
    script.chmod(0o755)
    return script


def install_image(paths: Paths, manifest: ImageManifest) -> None:
    folder = paths.images / manifest.name
    folder.mkdir(parents=True)
    for member in (manifest.kernel, manifest.initrd, manifest.disk):
        if member:
            (folder / member).write_bytes(b"fake")
    (folder / "image.json").write_text(manifest.model_dump_json())


def _touch_overlay(argv: Sequence[str]) -> None:
    Path(argv[-2]).write_bytes(b"overlay")


PlatformFactory = Callable[..., Platform]


@pytest.fixture
async def make_platform(home: Path) -> AsyncIterator[PlatformFactory]:
    """Open a Platform (as hangard does) on ``home``; several can be opened in turn.

    Its network service makes no real links (a FakeLinks) and runs stand-in dnsmasqs."""
    opened: list[Platform] = []
    paths = Paths(state=home / "lib", runtime=home / "run")
    paths.ensure()
    install_image(paths, tiny_manifest())

    def factory(**env: str) -> Platform:
        runner = RecordingRunner()
        runner.on(["qemu-img", "create"], _touch_overlay)
        host = host_facts(qemu_binary=str(fake_qemu(home, **env)))
        platform = Platform.open(paths, host, runner)
        fake_host_networking(platform, runner)
        opened.append(platform)
        return platform

    yield factory
    for platform in opened:
        for runtime in list(platform.vms.supervisor._runtimes.values()):
            runtime.kill()
        await platform.stop()
    # An app's lifespan stops its platform first, which lets go of its QEMUs and leaves
    # them running (as hangard does): none of them is in _runtimes any more by now.
    kill_vm_processes(home)
    stop_dnsmasqs(paths)
