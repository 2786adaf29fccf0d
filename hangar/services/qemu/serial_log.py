"""The serial log, bounded: a guest must not fill the host's disk through its console.

QEMU writes the guest's serial output itself (``-chardev socket,...,logfile=``,
opened with O_APPEND), and a guest can write ~290 KiB/s there for as long as it
runs. hangard checks each running VM's log every :data:`CHECK_INTERVAL` seconds;
past :data:`CAP` bytes it copies the log's whole blocks to ``serial.log.1``
(replacing the older one), then removes those blocks from the front of
``serial.log`` with fallocate(FALLOC_FL_COLLAPSE_RANGE). The kernel does that under
the inode's lock, and QEMU appends: its writes land after what is left, and nothing
is lost between the copy and the cut. No reopen, no signal, and the same works for a
QEMU adopted after hangard restarts. At most ``2 * CAP`` plus one interval of output
is kept. Filesystems without COLLAPSE_RANGE (tmpfs) get logrotate's copytruncate:
what the guest writes between the copy and the truncation is lost there.

Python's os module has no fallocate with flags: it is called through ctypes.

Readers (``hangar logs``, boot-marker waits) read across the rotation with
:func:`tail` and :func:`read_from`: ``serial.log.1`` always ends where
``serial.log`` begins.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import threading
from pathlib import Path
from typing import BinaryIO

from hangar.node.base import SerialPosition

CAP = 4 * 1024 * 1024
# Readers and the rotation take turns (all run in hangard): a reader that looked between
# the rotated copy's replacement and the cut would map its offset wrongly for good.
_turns = threading.RLock()
CHECK_INTERVAL = 1.0


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def rotate_if_full(log: Path, cap: int = CAP) -> bool:
    """Rotate ``log`` if it holds more than ``cap`` bytes; whether it did."""
    with _turns:
        return _rotate_if_full(log, cap)


def _rotate_if_full(log: Path, cap: int) -> bool:
    try:
        if log.stat().st_size <= cap:
            return False
    except FileNotFoundError:
        return False
    older = rotated(log)
    staging = older.with_name(older.name + ".tmp")
    with log.open("r+b") as src:
        info = os.fstat(src.fileno())
        # COLLAPSE_RANGE takes whole filesystem blocks.
        cut = info.st_size - info.st_size % info.st_blksize
        with staging.open("wb") as dst:
            _copy(src, dst, cut)
        # The copy is in place before the log shrinks, so a reader that sees it
        # shrink finds its rest there.
        os.replace(staging, older)
        if _collapse(src.fileno(), cut):
            return True
        # No COLLAPSE_RANGE here: copy what is past the blocks (and what the guest
        # wrote meanwhile), then truncate at once: only what lands in between is lost.
        with older.open("ab") as dst:
            src.seek(cut)
            shutil.copyfileobj(src, dst)
            dst.flush()
            src.truncate(0)
    return True


def _copy(src: BinaryIO, dst: BinaryIO, length: int) -> None:
    src.seek(0)
    left = length
    while left > 0:
        chunk = src.read(min(left, 1024 * 1024))
        if not chunk:
            break
        dst.write(chunk)
        left -= len(chunk)
    dst.flush()


_FALLOC_FL_COLLAPSE_RANGE = 0x08  # linux/falloc.h
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _collapse(fd: int, length: int) -> bool:
    """Remove the first ``length`` bytes of the file; False where the filesystem
    cannot (EOPNOTSUPP) or the length is not whole blocks (EINVAL)."""
    if length <= 0:
        return False
    if _libc.fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path, start: int, end: int | None = None) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            return fh.read() if end is None else fh.read(max(0, end - start))
    except FileNotFoundError:
        return b""


def _rotation(log: Path) -> tuple[int, int]:
    """Which rotation the log is at: the identity of ``serial.log.1`` (a new file at
    each rotation), or (0, 0) before the first."""
    try:
        info = rotated(log).stat()
    except FileNotFoundError:
        return (0, 0)
    return (info.st_ino, info.st_ctime_ns)


def tail(log: Path, lines: int, window: int = 256 * 1024) -> tuple[bytes, SerialPosition]:
    """The last ``lines`` lines of the log (the rotated part too, within ``window``
    bytes), and the position in ``log`` to follow it from."""
    with _turns:
        return _tail(log, lines, window)


def _tail(log: Path, lines: int, window: int) -> tuple[bytes, SerialPosition]:
    rotation = _rotation(log)
    size = _size(log)
    here = SerialPosition(size, rotation)
    if lines <= 0:
        return b"", here
    data = _read(log, max(0, size - window), size)
    if len(data) < window and data.count(b"\n") < lines + 1:
        older = rotated(log)
        data = _read(older, max(0, _size(older) - (window - len(data)))) + data
    # A trailing newline ends the last line rather than starting an empty one.
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data, here
    return data[cut + 1 :], here


def read_from(log: Path, position: SerialPosition) -> tuple[bytes, SerialPosition]:
    """What the log gained since ``position``, and the new position. After a rotation
    ``serial.log.1`` holds what was cut from the log's front (it ends where the log
    now begins): the rest comes from there first when the reader was in it."""
    with _turns:
        return _read_from(log, position)


def _read_from(log: Path, position: SerialPosition) -> tuple[bytes, SerialPosition]:
    rotation = _rotation(log)
    size = _size(log)
    offset = position.offset
    if rotation == position.rotation:
        chunk = _read(log, offset, size)
        return chunk, SerialPosition(offset + len(chunk), rotation)
    older = rotated(log)
    cut = _size(older)
    if offset >= cut:  # collapsed past where the reader was: it goes on in the log
        chunk = _read(log, offset - cut, size)
    else:
        chunk = _read(older, offset) + _read(log, 0, size)
    return chunk, SerialPosition(size, rotation)
