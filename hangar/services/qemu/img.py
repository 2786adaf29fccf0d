"""qemu-img, always with explicit formats (never let it probe an image)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def info(runner: CommandRunner, image: Path, fmt: str) -> dict[str, Any]:
    """``qemu-img info`` of ``image`` read as ``fmt``; backing chain not followed."""
    result = runner.run(["qemu-img", "info", "--output=json", "-f", fmt, str(image)])
    data: dict[str, Any] = json.loads(result.stdout)
    return data
