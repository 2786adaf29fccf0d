"""hangar's state is private to root whatever the umask (issue 14, item 5)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.paths import Paths
from hangar.state.db import Database


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_folders_are_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    paths = Paths.from_env({"HANGAR_HOME": str(tmp_path / "home")})
    paths.ensure()
    for folder in (
        paths.state,
        paths.images,
        paths.cache,
        paths.vms,
        paths.runtime,
        paths.runtime / "vm",
        paths.socket.parent,
    ):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_folders_made_earlier_become_private(tmp_path: Path, loose_umask: None) -> None:
    paths = Paths.from_env({"HANGAR_HOME": str(tmp_path / "home")})
    paths.vms.mkdir(parents=True, mode=0o755)
    paths.ensure()
    assert stat.S_IMODE(paths.vms.stat().st_mode) == 0o700


def test_database_and_its_wal_are_private(tmp_path: Path, loose_umask: None) -> None:
    db = Database(tmp_path / "h.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    files = [p for p in tmp_path.iterdir() if p.name.startswith("h.db")]
    assert {p.name for p in files} >= {"h.db", "h.db-wal"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
