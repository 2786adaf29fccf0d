"""Session fixtures: one real hangard with the real tiny image, shared by the integration
and end-to-end tests (the image is built once per run)."""

from __future__ import annotations

import shutil
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
