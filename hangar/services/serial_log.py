"""A VM's serial log kept bounded: ``serial.log`` up to :data:`CAP` bytes, the one
before it as ``serial.log.1``, nothing older.

A guest writes its serial console as fast as it likes (~290 KiB/s measured under
TCG), so an unbounded log lets any guest fill the host's disk.

QEMU keeps writing the file itself (the console chardev's ``logfile=`` with
``logappend=on``, so it opens it ``O_APPEND``), and hangard rotates it by
copy-then-truncate: it copies ``serial.log`` to ``serial.log.1`` and truncates
``serial.log`` to zero; QEMU's next append lands at the new end (offset 0), never
in a hole. Chosen over hangard reading the console socket and writing the log
itself because:

* output is never lost while hangard is away: a chardev server socket with no
  client drops what the guest writes, and hangard restarts while VMs keep running;
* the console socket takes one client, which is the user's console (and the tiny
  image's identity hook); hangard would have to multiplex it for everyone.

The cost: bytes the guest writes between the end of the copy and the truncate
(microseconds) are lost, and while hangard is down nothing is rotated (it checks
again as soon as it adopts the VM, and before every start). hangard checks every
:data:`CHECK_INTERVAL` seconds, so a log overshoots :data:`CAP` by at most what a
guest writes in that time: a VM's serial output takes at most ~2 x CAP + 1 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CAP = 4 * 1024 * 1024
CHECK_INTERVAL = 1.0
# How much of the log's end is read to find its last lines.
TAIL_WINDOW = 256 * 1024


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def rotate(path: Path, cap: int | None = None) -> bool:
    """If ``path`` holds more than ``cap`` (:data:`CAP`) bytes, move its content to
    ``path.1`` (replacing the previous one) and empty it; return whether it did."""
    cap = CAP if cap is None else cap
    try:
        if path.stat().st_size <= cap:
            return False
    except FileNotFoundError:
        return False
    old = rotated(path)
    tmp = old.with_name(old.name + ".tmp")
    tmp.unlink(missing_ok=True)
    # Private to hangard whatever the umask: it is the guest's console output.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as out, path.open("rb") as src:
        shutil.copyfileobj(src, out, 1024 * 1024)
        # Truncated right after the copy reached the end: the window in which a
        # guest's bytes are lost is the few microseconds in between.
        os.truncate(path, 0)
    os.replace(tmp, old)
    return True


def tail(path: Path, lines: int) -> tuple[bytes, int]:
    """The last ``lines`` lines of the log (reaching into ``path.1`` when the current
    file holds fewer), and the size of ``path`` they end at: where to follow from."""
    current = _end(path, TAIL_WINDOW)
    size = current[1]
    if lines <= 0:
        return b"", size
    data = current[0]
    if _count_lines(data) < lines and len(data) < TAIL_WINDOW:
        data = _end(rotated(path), TAIL_WINDOW - len(data))[0] + data
    # A trailing newline ends the last line rather than starting an empty one.
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data, size
    return data[cut + 1 :], size


def read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """What was appended to the log since ``offset``, and the offset to read from
    next. Across a rotation (the file is now shorter than ``offset``) the rest of
    the old file comes from ``path.1``, then the new file from its start."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return b"", offset
    chunk = b""
    if size < offset:
        with contextlib.suppress(FileNotFoundError), rotated(path).open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        offset = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        new = fh.read()
    return chunk + new, offset + len(new)


def _end(path: Path, window: int) -> tuple[bytes, int]:
    """The last ``window`` bytes of ``path`` and its size ((b"", 0) if absent)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - window))
            return fh.read(window), size
    except FileNotFoundError:
        return b"", 0


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


async def keep(path: Path) -> None:
    """Rotate ``path`` whenever it grows past :data:`CAP`, until cancelled (the VM's
    QEMU exited or hangard let go of it)."""
    while True:
        try:
            if await asyncio.to_thread(rotate, path):
                log.info("rotated %s (over %d bytes)", path, CAP)
        except OSError as exc:
            # E.g. the VM's folder is being deleted; the next round tells.
            log.warning("could not rotate %s: %s", path, exc)
        await asyncio.sleep(CHECK_INTERVAL)
