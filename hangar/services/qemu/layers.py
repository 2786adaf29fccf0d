"""Which qcow2 file is a VM's disk now.

A new VM's disk is ``root.qcow2``. A snapshot freezes that file where it is and
puts a new overlay file on top; the ``active-disk`` symlink in the VM's folder
names the overlay. Files are never renamed while QEMU may have them open: QEMU
reopens a node by its file name when it changes the node's access mode (e.g.
when it becomes a read-only backing file), and a renamed file would then be
another file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

POINTER = "active-disk"
DEFAULT = "root.qcow2"


def active_disk(folder: Path) -> Path | None:
    """The VM's current disk file when a snapshot or restore has moved it; else None."""
    try:
        return folder / os.readlink(folder / POINTER)
    except OSError:
        return None


def point_to(folder: Path, disk: Path) -> None:
    """Make ``disk`` (a file in ``folder``) the VM's disk, atomically."""
    tmp = folder / f".{POINTER}.{uuid.uuid4().hex[:8]}"
    os.symlink(disk.name, tmp)
    os.rename(tmp, folder / POINTER)


def new_layer(folder: Path) -> Path:
    """A fresh file name for a new overlay in ``folder``."""
    return folder / f"disk-{uuid.uuid4().hex[:12]}.qcow2"
