"""The serial log stays bounded and readers read across its rotation (issue 14, item 6)."""

from __future__ import annotations

import os
from pathlib import Path

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
    assert serial_log.tail(log, 10) == (b"", 0)
    assert serial_log.read_from(log, 0) == (b"", 0)
    assert not serial_log.rotate_if_full(log)


async def test_logs_turn_crlf_into_lf_even_split_between_reads(tmp_path: Path) -> None:
    import asyncio

    from hangar.services.vms import _serial_stream

    log = tmp_path / "serial.log"
    log.write_bytes(b"\ntwo\r\n")

    class LogNode:  # the one Node method the stream uses, over a real log file
        async def serial_from(self, config: object, offset: int) -> tuple[bytes, int]:
            return serial_log.read_from(log, offset)

    ended = asyncio.Event()
    followed = _serial_stream(LogNode(), None, (b"one\r", 0), True, ended)  # type: ignore[arg-type]
    chunks = [await anext(followed), await anext(followed)]  # the backlog, then one read
    ended.set()
    chunks += [c async for c in followed]
    assert b"".join(chunks) == b"one\ntwo\n"
    # A lone CR at the very end is kept, not swallowed.
    rest = _serial_stream(LogNode(), None, (b"end\r", 0), False, None)  # type: ignore[arg-type]
    assert b"".join([c async for c in rest]) == b"end\r"
