"""qemu-img, always with explicit formats (never let it probe an image)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hangar.errors import HostCommandFailed
from hangar.runner import CommandRunner


def create_overlay(runner: CommandRunner, base: Path, overlay: Path, size: int) -> None:
    """Create a qcow2 linked clone of the qcow2 ``base``, grown to ``size`` bytes."""
    runner.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(base.absolute()),
            str(overlay),
            str(size),
        ]
    )


# qemu-img parsing a file from outside runs under limits: a crafted header can make it
# allocate or loop without end (CVE-2015-5162; OpenStack's fix: prlimit, 1 GiB of
# address space and 30 s of CPU for 'info'). 'check' walks every table of an image
# that passed 'info', so it gets more time.
INFO_LIMITS = ("prlimit", f"--as={1 << 30}", "--cpu=30", "--")
CHECK_LIMITS = ("prlimit", f"--as={2 << 30}", "--cpu=300", "--")


def info(
    runner: CommandRunner, image: Path, fmt: str, *, untrusted: bool = False
) -> dict[str, Any]:
    """``qemu-img info`` of ``image`` read as ``fmt``; backing chain not followed.

    ``-U`` (force share): a running QEMU holds a write lock on its disks; the
    header facts read here (size, backing file) do not change while it runs.
    ``untrusted``: a file from outside, read under :data:`INFO_LIMITS`.
    """
    limits = INFO_LIMITS if untrusted else ()
    argv = [*limits, "qemu-img", "info", "-U", "--output=json", "-f", fmt, str(image)]
    result = runner.run(argv)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def convert(
    runner: CommandRunner,
    src: Path,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    options: str | None = None,
    backing: Path | None = None,
    timeout: float | None = 3600,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Copy ``src`` (read as ``src_fmt``) to a new ``dst`` in ``dst_fmt``.

    With ``backing`` (qcow2 only), ``dst`` keeps only what differs from that
    qcow2 image and names it as its backing file: a linked copy.
    ``progress`` gets the percent done as qemu-img reports it (``-p``); if it
    raises, qemu-img is killed and the exception passes through.
    """
    argv = ["qemu-img", "convert", "-p" if progress else "-q", "-f", src_fmt, "-O", dst_fmt]
    opts = [options] if options else []
    if backing is not None:
        argv += ["-B", str(backing.absolute())]
        opts.append("backing_fmt=qcow2")
    if opts:
        argv += ["-o", ",".join(opts)]
    on_output = None if progress is None else ProgressParser(progress).feed
    runner.run([*argv, str(src), str(dst)], timeout=timeout, on_output=on_output)


class ProgressParser:
    """Turns qemu-img's ``-p`` meter (``    (42.17/100%)`` redrawn after ``\\r``) into
    calls of ``report(percent)``, once per whole percent."""

    METER = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")

    def __init__(self, report: Callable[[float], None]):
        self.report = report
        self.last = -1
        self.tail = ""

    def feed(self, text: str) -> None:
        self.tail += text
        found = self.METER.findall(self.tail)
        # Keep only what follows the last complete meter (a chunk may split one).
        end = self.tail.rfind(")")
        self.tail = self.tail[end + 1 :] if end >= 0 else self.tail[-64:]
        if found:
            percent = float(found[-1])
            if int(percent) != self.last:
                self.last = int(percent)
                self.report(percent)


def check(
    runner: CommandRunner, image: Path, fmt: str, *, untrusted: bool = False
) -> dict[str, Any] | None:
    """``qemu-img check``; None when the format has no checks (raw).

    Raises :class:`HostCommandFailed` when qemu-img finds corruption (exit 2)
    or cannot check (exit 1), or (``untrusted``) goes past :data:`CHECK_LIMITS`.
    Leaked clusters (exit 3) are harmless.
    """
    limits = CHECK_LIMITS if untrusted else ()
    result = runner.run(
        [*limits, "qemu-img", "check", "-f", fmt, "--output=json", str(image)],
        check=False,
        timeout=600,
    )
    if result.returncode == 63:
        return None
    if result.returncode not in (0, 3):
        raise HostCommandFailed(
            result.argv,
            result.returncode,
            result.stderr or result.stdout,
            hint="the image is damaged; repair it where it came from, then import it again",
        )
    data: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return data


def read_head(runner: CommandRunner, image: Path, fmt: str, size: int, out: Path) -> bytes:
    """The first ``size`` bytes of the guest-visible disk of ``image`` (via ``qemu-img dd``)."""
    runner.run(
        [
            "qemu-img", "dd", "-f", fmt, "-O", "raw", f"bs={size}", "count=1",
            f"if={image}", f"of={out}",
        ],
        timeout=60,
    )  # fmt: skip
    try:
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def resize(runner: CommandRunner, image: Path, fmt: str, size: int) -> None:
    """Grow ``image`` to ``size`` bytes (offline)."""
    runner.run(["qemu-img", "resize", "-q", "-f", fmt, str(image), str(size)], timeout=120)


def create(runner: CommandRunner, image: Path, fmt: str, size: int) -> None:
    """Create an empty ``fmt`` image of ``size`` bytes."""
    runner.run(["qemu-img", "create", "-q", "-f", fmt, str(image), str(size)], timeout=120)


def create_overlay_unsafe(runner: CommandRunner, base: Path, overlay: Path, size: int) -> None:
    """Like :func:`create_overlay`, without opening ``base`` (``-u``): a running QEMU
    holds a write lock on it, and the size is given, so nothing needs reading."""
    runner.run(
        [
            "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "qcow2",
            "-b", str(base.absolute()), str(overlay), str(size),
        ]
    )  # fmt: skip


def backing_file(runner: CommandRunner, image: Path) -> Path | None:
    """The backing file the qcow2 ``image`` names, as an absolute path; None if it has none."""
    data = info(runner, image, "qcow2")
    name = data.get("full-backing-filename") or data.get("backing-filename")
    return Path(str(name)) if name else None


def rebase(
    runner: CommandRunner,
    image: Path,
    base: Path | None,
    *,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Make the qcow2 ``image`` hang from ``base`` (or from nothing) with the same content:
    qemu-img's safe mode copies into it whatever differs between the old and the new
    backing chain (merging a layer away)."""
    argv = ["qemu-img", "rebase", "-p" if progress else "-q", "-f", "qcow2"]
    argv += ["-F", "qcow2", "-b", str(base.absolute())] if base else ["-b", ""]
    on_output = None if progress is None else ProgressParser(progress).feed
    runner.run([*argv, str(image)], timeout=3600, on_output=on_output)


def has_own_data(runner: CommandRunner, image: Path) -> bool:
    """True if the qcow2 ``image`` itself (not its backing chain) holds any written data."""
    result = runner.run(
        ["qemu-img", "map", "-U", "--output=json", "-f", "qcow2", str(image)], timeout=120
    )
    extents: list[dict[str, Any]] = json.loads(result.stdout)
    return any(e.get("depth") == 0 and (e.get("data") or e.get("zero")) for e in extents)
