"""Reaching what a sandboxed QEMU made in its runtime folder, without following links.

A VM's runtime folder is writable by the VM's QEMU uid: QEMU makes its sockets
(QMP, console, agent, VNC) and pid file there. A compromised QEMU could replace one
with a symlink to any socket or file on the host, and hangard, which is root, would
connect to it or read it. So those paths are opened with O_PATH|O_NOFOLLOW (which
opens a symlink itself, never its target), checked to be what they should be, and
reached through ``/proc/self/fd/N``: the kernel connects to exactly the inode that
was checked, so a swap between the check and the connect changes nothing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PATH_ONLY = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def reachable_socket(path: Path) -> Iterator[str]:
    """A name to connect to that is the unix socket at ``path`` and nothing else.

    Raises :class:`OSError` (ENOTSOCK) for a symlink or any other kind of file, and
    FileNotFoundError when there is nothing there yet. Connect inside the block."""
    fd = os.open(path, _PATH_ONLY)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTSOCK, f"{path} is not a socket (refusing to follow it)")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


async def open_unix_connection(
    path: Path, **kwargs: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """:func:`asyncio.open_unix_connection` to the socket at ``path``, never through a link."""
    with reachable_socket(path) as target:
        return await asyncio.open_unix_connection(target, **kwargs)


def read_small_file(path: Path, limit: int = 4096) -> str:
    """The text of the regular file at ``path`` (at most ``limit`` bytes), never through
    a link: a QEMU's pid file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)
