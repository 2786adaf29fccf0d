"""A VM's files on this host: its disk made from an image, its boot files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hangar.runner import CommandRunner
from hangar.services.qemu import img
from hangar.spec.image import ImageManifest
from hangar.spec.vm import VMConfig


def link_boot_files(config: VMConfig, folder: Path) -> VMConfig:
    """Hard-link the kernel and initramfs ``config`` boots into ``folder``; the config using them.

    A VM that owns its boot files does not depend on the image it came from.
    """
    if config.boot is None:
        return config
    updates: dict[str, str | None] = {}
    for key in ("kernel", "initrd"):
        current = getattr(config.boot, key)
        if current is None:
            continue
        target = folder / Path(current).name
        if not target.exists():
            link_or_copy(Path(current), target)
        updates[key] = str(target)
    return config.model_copy(update={"boot": config.boot.model_copy(update=updates)})


def full_copy(
    runner: CommandRunner, image_dir: Path, image: ImageManifest, target: Path, size: int
) -> None:
    """An independent copy of the image's disk, grown to ``size``, plus its boot files."""
    img.convert(runner, image_dir / image.disk, "qcow2", target, "qcow2")
    img.resize(runner, target, "qcow2", size)
    for member in (image.kernel, image.initrd):
        if member is not None:
            link_or_copy(image_dir / member, target.parent / member)


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
