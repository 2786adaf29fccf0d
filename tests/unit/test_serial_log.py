"""The serial log stays bounded and readers read across its rotation (issue 14, item 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hangar.node.base import SerialPosition
from hangar.services.qemu import serial_log


def _appender(path: Path) -> int:
    # As QEMU opens a chardev's logfile with logappend=on.
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def test_a_full_log_is_rotated_and_the_writer_goes_on_at_its_new_end(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    fd = _appender(log)
    try:
        os.write(fd, b"".join(b"line %d\n" % i for i in range(200)))
        assert not serial_log.rotate_if_full(log, cap=10_000)
        assert serial_log.rotate_if_full(log, cap=1000)
        assert log.stat().st_size == 0
        assert serial_log.rotated(log).read_bytes().endswith(b"line 199\n")
        os.write(fd, b"after\n")
        assert log.read_bytes() == b"after\n"  # no hole: the append lands at offset 0
    finally:
        os.close(fd)


def test_tail_and_follow_read_across_the_rotation(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    fd = _appender(log)
    try:
        os.write(fd, b"one\ntwo\nthree\n")
        first, offset = serial_log.tail(log, 2)
        assert first == b"two\nthree\n"
        os.write(fd, b"four\n")
        serial_log.rotate_if_full(log, cap=4)
        os.write(fd, b"five\n")
        chunk, offset = serial_log.read_from(log, offset)
        assert chunk == b"four\nfive\n"
        assert serial_log.read_from(log, offset) == (b"", offset)
        shown, _ = serial_log.tail(log, 3)
        assert shown == b"three\nfour\nfive\n"  # the rotated part too
    finally:
        os.close(fd)


def test_a_missing_log_reads_as_empty(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    assert serial_log.tail(log, 10) == (b"", SerialPosition(0))
    assert serial_log.read_from(log, SerialPosition(0)) == (b"", SerialPosition(0))
    assert not serial_log.rotate_if_full(log)


async def test_logs_turn_crlf_into_lf_even_split_between_reads(tmp_path: Path) -> None:
    import asyncio

    from hangar.services.vms import _serial_stream

    log = tmp_path / "serial.log"
    log.write_bytes(b"\ntwo\r\n")

    class LogNode:  # the one Node method the stream uses, over a real log file
        async def serial_from(
            self, config: object, position: SerialPosition
        ) -> tuple[bytes, SerialPosition]:
            return serial_log.read_from(log, position)

    ended = asyncio.Event()
    followed = _serial_stream(LogNode(), None, (b"one\r", SerialPosition(0)), True, ended)  # type: ignore[arg-type]
    chunks = [await anext(followed), await anext(followed)]  # the backlog, then one read
    ended.set()
    chunks += [c async for c in followed]
    assert b"".join(chunks) == b"one\ntwo\n"
    # A lone CR at the very end is kept, not swallowed.
    rest = _serial_stream(LogNode(), None, (b"end\r", SerialPosition(0)), False, None)  # type: ignore[arg-type]
    assert b"".join([c async for c in rest]) == b"end\r"


def _collapses(folder: Path) -> bool:
    probe = folder / "probe"
    with probe.open("w+b") as fh:
        fh.write(b"x" * 65536)
        fh.flush()
        return serial_log._collapse(fh.fileno(), os.fstat(fh.fileno()).st_blksize)


def test_rotation_loses_nothing_a_writer_appends_meanwhile(tmp_path: Path) -> None:
    """QEMU appends while hangard rotates: a follower reading across many rotations
    gets every line, in order (COLLAPSE_RANGE cuts under the inode lock)."""
    import threading

    if not _collapses(tmp_path):
        pytest.skip("this filesystem has no FALLOC_FL_COLLAPSE_RANGE (copytruncate loses)")
    log = tmp_path / "serial.log"
    count = 200000
    done = threading.Event()

    def guest() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for n in range(count):
                os.write(fd, b"line %06d\n" % n)
        finally:
            os.close(fd)
            done.set()

    writer = threading.Thread(target=guest)
    writer.start()
    got, position, rotations = [], SerialPosition(0), 0
    while not done.is_set() or position.offset != log.stat().st_size:
        rotations += serial_log.rotate_if_full(log, cap=64 * 1024)
        chunk, position = serial_log.read_from(log, position)
        got.append(chunk)
    writer.join()
    chunk, position = serial_log.read_from(log, position)
    got.append(chunk)
    assert rotations >= 2  # rotated while the writer wrote (more under less load)
    assert b"".join(got) == b"".join(b"line %06d\n" % n for n in range(count))
