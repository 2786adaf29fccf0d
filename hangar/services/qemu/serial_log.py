"""The serial log, bounded: a guest must not fill the host's disk through its console.

QEMU writes the guest's serial output itself (``-chardev socket,...,logfile=``,
opened with O_APPEND), and a guest can write ~290 KiB/s there for as long as it
runs. hangard checks each running VM's log every :data:`CHECK_INTERVAL` seconds;
past :data:`CAP` bytes it copies the log to ``serial.log.1`` (replacing the older
one) and truncates ``serial.log`` to zero. Because QEMU appends, its next write
lands at the new end (offset 0): no reopen, no signal, and the same works for a
QEMU adopted after hangard restarts. At most ``2 * CAP`` plus one interval of
output is kept; what the guest writes between the copy and the truncation (a few
microseconds) is lost, as with logrotate's copytruncate.

Readers (``hangar logs``, boot-marker waits) read across the rotation with
:func:`tail` and :func:`read_from`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CAP = 4 * 1024 * 1024
CHECK_INTERVAL = 1.0


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def rotate_if_full(log: Path, cap: int = CAP) -> bool:
    """Rotate ``log`` if it holds more than ``cap`` bytes; whether it did."""
    try:
        if log.stat().st_size <= cap:
            return False
    except FileNotFoundError:
        return False
    older = rotated(log)
    staging = older.with_name(older.name + ".tmp")
    with log.open("r+b") as src, staging.open("wb") as dst:
        shutil.copyfileobj(src, dst)
        # What the guest wrote while the copy ran, then at once the truncation: only
        # what lands in between is lost. The copy is in place before the log
        # shrinks, so a reader that sees it shrink finds its rest there.
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.replace(staging, older)
        src.truncate(0)
    return True


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


def tail(log: Path, lines: int, window: int = 256 * 1024) -> tuple[bytes, int]:
    """The last ``lines`` lines of the log (the rotated part too, within ``window``
    bytes), and the offset in ``log`` to follow it from."""
    size = _size(log)
    if lines <= 0:
        return b"", size
    data = _read(log, max(0, size - window), size)
    if len(data) < window and data.count(b"\n") < lines + 1:
        older = rotated(log)
        data = _read(older, max(0, _size(older) - (window - len(data)))) + data
    # A trailing newline ends the last line rather than starting an empty one.
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data, size
    return data[cut + 1 :], size


def read_from(log: Path, offset: int) -> tuple[bytes, int]:
    """What the log gained since ``offset``, and the new offset. If the log shrank it
    was rotated: the rest of the rotated copy comes first, then the new log."""
    size = _size(log)
    if size >= offset:
        chunk = _read(log, offset, size)
        return chunk, offset + len(chunk)
    chunk = _read(rotated(log), offset) + _read(log, 0, size)
    return chunk, size
