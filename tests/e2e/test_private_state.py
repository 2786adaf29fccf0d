"""Nothing hangard keeps is readable by other local users (issue 14, item 5: lib/ and
vms/ were 0755; the database and its WAL, disks, serial logs and a warm template's
guest memory were 0644).

After a full lifecycle (launch, a snapshot with memory, a copy, a stop) every file,
folder and socket under the shared hangard's home is walked: none grants anything to
others, and the database, WAL and every VM file grant nothing to the group either.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

from hangar.client.client import ApiError, Client
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for_marker

pytestmark = [pytest.mark.e2e, pytest.mark.qemu]


def _open_to_others(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            if info.st_mode & 0o007:
                found.append(f"{stat.filemode(info.st_mode)} {path.relative_to(root)}")
    return found


def test_nothing_under_hangards_home_is_open_to_other_users(daemon: Daemon, client: Client) -> None:
    try:
        client.launch({"name": "priv", "image": "tiny", "memory": 128 * 1024 * 1024})
        wait_for_marker(client, "priv", "HANGAR-BOOT-COMPLETE")
        client.create_snapshot("priv", "s1", memory=True)
        client.stop("priv", force=True)
        client.copy("priv", "priv-copy")
        for top in ("lib", "run"):
            assert _open_to_others(daemon.home / top) == []
        for name in ("hangar.db", "hangar.db-wal"):
            mode = stat.S_IMODE(os.stat(daemon.home / "lib" / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        for top in ("lib", "lib/vms", "lib/images", "run"):
            mode = stat.S_IMODE(os.stat(daemon.home / top).st_mode)
            assert mode & 0o077 == 0, (top, oct(mode))
    finally:
        for name in ("priv", "priv-copy"):
            with contextlib.suppress(ApiError):
                client.delete(name, force=True)
