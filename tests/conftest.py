"""Session fixtures: one real hangard with the real tiny image, shared by the integration
and end-to-end tests (the image is built once per run)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.client.client import Client
from tests.support.daemon import Daemon, kill_vm_processes
from tests.support.waiting import free_port


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="hgi-", dir="/tmp"))
    # Serves HTTPS on loopback too, so remote access is tested on the same guests.
    hangard = Daemon(home, listen_port=free_port())
    hangard.start()
    try:
        with hangard.client() as client:
            client.build_image("tiny")
        yield hangard
    finally:
        hangard.stop()
        kill_vm_processes(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture(scope="session")
def debian_image(daemon: Daemon) -> str:
    """debian-12, built once per run (reused from HANGAR_CACHE when its recipe is unchanged)."""
    with daemon.client() as client:
        client.build_image("debian-12")
    return "debian-12"


@pytest.fixture(scope="session")
def ssh_home() -> Iterator[Path]:
    """A HOME whose ~/.ssh holds a fresh key pair, as a user's would."""
    home = Path(tempfile.mkdtemp(prefix="hgssh-", dir="/tmp"))
    (home / ".ssh").mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester@hangar",
         "-f", str(home / ".ssh" / "id_ed25519")],
        check=True,
    )  # fmt: skip
    yield home
    shutil.rmtree(home, ignore_errors=True)
