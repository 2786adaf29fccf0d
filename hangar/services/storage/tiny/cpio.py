"""A minimal newc cpio writer for initramfs archives.

Written in Python rather than piped through cpio(1) so the archive is
deterministic (sorted entries, zero timestamps, root-owned) whatever the host's
umask or clock says, and so the build needs one host tool fewer.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One archive member: ``data`` for files, ``target`` for symlinks, neither for dirs."""

    path: str
    mode: int
    data: bytes = b""
    target: str | None = None


def directory(path: str, perms: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perms)


def file(path: str, data: bytes, perms: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perms, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target=target)


def archive(entries: list[Entry]) -> bytes:
    """The newc archive of ``entries`` (parents should come before children)."""
    out = bytearray()
    for ino, entry in enumerate(entries, start=1):
        body = entry.target.encode() if entry.target is not None else entry.data
        _member(out, ino, entry.path.lstrip("/"), entry.mode, body)
    _member(out, 0, "TRAILER!!!", 0, b"")
    return bytes(out)


def _member(out: bytearray, ino: int, name: str, mode: int, body: bytes) -> None:
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(body), 0, 0, 0, 0, len(name) + 1, 0)
    out += b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
    out += name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += body
    out += b"\0" * (-len(out) % 4)
