"""The newc writer, read back by a small independent parser."""

from __future__ import annotations

import stat

from hangar.services.storage.tiny import cpio


def parse(archive: bytes) -> list[tuple[str, int, bytes]]:
    members: list[tuple[str, int, bytes]] = []
    pos = 0
    while True:
        assert archive[pos : pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = archive[pos : pos + namesize - 1].decode()
        pos = (pos + namesize + 3) // 4 * 4
        data = archive[pos : pos + size]
        pos = (pos + size + 3) // 4 * 4
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return members
        members.append((name, mode, data))


def test_round_trip() -> None:
    archive = cpio.archive(
        [
            cpio.directory("bin"),
            cpio.file("bin/busybox", b"\x7fELF...", 0o755),
            cpio.symlink("bin/sh", "/bin/busybox"),
            cpio.file("/init", b"#!/bin/sh\n", 0o755),
        ]
    )
    members = parse(archive)
    assert [m[0] for m in members] == ["bin", "bin/busybox", "bin/sh", "init"]
    assert stat.S_ISDIR(members[0][1])
    assert members[1][1] == stat.S_IFREG | 0o755 and members[1][2] == b"\x7fELF..."
    assert stat.S_ISLNK(members[2][1]) and members[2][2] == b"/bin/busybox"


def test_deterministic() -> None:
    entries = [cpio.directory("etc"), cpio.file("etc/hosts", b"127.0.0.1 localhost\n")]
    assert cpio.archive(entries) == cpio.archive(list(entries))
