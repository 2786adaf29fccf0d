"""The serial log's cap and rotation, with a writer that appends as QEMU's chardev
logfile does (O_APPEND, one open file for the VM's whole run)."""

from __future__ import annotations

import os
from pathlib import Path

from hangar.services import serial_log

CAP = 4096


def _lines(first: int, count: int) -> bytes:
    return b"".join(b"line %06d\r\n" % n for n in range(first, first + count))


def test_a_log_over_the_cap_is_rotated_and_qemu_keeps_appending(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # as QEMU does
    try:
        written = 0
        for batch in range(100):  # 100 x 50 lines x 13 bytes = 65 KB, 16 x the cap
            data = _lines(batch * 50, 50)
            os.write(fd, data)
            written += len(data)
            serial_log.rotate(log, CAP)
            assert log.stat().st_size <= CAP
        os.write(fd, b"after rotation\r\n")
    finally:
        os.close(fd)
    assert written > 10 * CAP
    # No hole: the write after a truncation landed at the new end.
    assert b"\0" not in log.read_bytes()
    assert log.read_bytes().endswith(b"line 004999\r\nafter rotation\r\n")
    old = serial_log.rotated(log)
    assert old.stat().st_size <= CAP + 50 * 13
    assert old.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serial.log", "serial.log.1"]


def test_a_small_log_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"boot\n")
    assert not serial_log.rotate(log, CAP)
    assert not serial_log.rotate(tmp_path / "absent.log", CAP)
    assert not serial_log.rotated(log).exists()


def test_the_tail_reaches_into_the_rotated_log(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(_lines(0, 400))
    assert serial_log.rotate(log, CAP)
    with log.open("ab") as fh:
        fh.write(_lines(400, 3))
    head, offset = serial_log.tail(log, 5)
    assert head == _lines(398, 5)
    assert offset == log.stat().st_size
    assert serial_log.tail(log, 2)[0] == _lines(401, 2)
    assert serial_log.tail(log, 0) == (b"", offset)
    assert serial_log.tail(tmp_path / "none.log", 5) == (b"", 0)


def test_following_across_a_rotation_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(_lines(0, 10))
    got, offset = serial_log.read_from(log, 0)
    with log.open("ab") as fh:
        fh.write(_lines(10, 400))
    assert serial_log.rotate(log, CAP)
    with log.open("ab") as fh:
        fh.write(_lines(410, 2))
    more, offset = serial_log.read_from(log, offset)
    assert got + more == _lines(0, 412)
    assert serial_log.read_from(log, offset) == (b"", offset)
