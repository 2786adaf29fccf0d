"""Export a qcow2 disk (an image's, or a stopped VM's whole chain) as qcow2, raw, VMDK, VHDX or OVA.

The result is written next to the target under a hidden temporary name and
renamed into place when complete: a failed export leaves no partial file.
An existing file is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hangar.errors import Conflict, InvalidInput
from hangar.runner import CommandRunner
from hangar.services.qemu import img
from hangar.services.storage import ova, ovf

ExportFormat = Literal["qcow2", "raw", "vmdk", "vhdx", "ova"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("qcow2", "raw", "vmdk", "vhdx", "ova")
# Stream-optimized VMDK: what OVAs carry and what VMware and VirtualBox import.
_OPTIONS: dict[str, str | None] = {
    "qcow2": "compat=1.1",
    "raw": None,
    "vmdk": "subformat=streamOptimized",
    "vhdx": "subformat=dynamic",
}


@dataclass(frozen=True)
class Hardware:
    """What goes into an OVF's virtual hardware section."""

    name: str
    cpus: int
    memory: int
    nics: int
    description: str = ""


def check_target(target: Path) -> Path:
    """The absolute target path; refused if it exists or its folder does not."""
    if not target.is_absolute():
        raise InvalidInput(f"export path '{target}' is not absolute", hint="give a full path")
    if target.exists() or target.is_symlink():
        raise Conflict(
            f"'{target}' already exists", hint="hangar never overwrites: remove it or pick another"
        )
    if not target.parent.is_dir():
        raise InvalidInput(
            f"folder '{target.parent}' does not exist", hint="create it first, or pick another"
        )
    return target


def export(
    runner: CommandRunner,
    disk: Path,
    fmt: ExportFormat,
    target: Path,
    hardware: Hardware,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write the qcow2 ``disk`` (with its backing chain, flattened) to ``target`` as ``fmt``.

    ``progress`` gets the conversion's percent done."""
    check_target(target)
    tmp = target.parent / f".{target.name}.hangar-{uuid.uuid4().hex[:8]}"
    try:
        if fmt == "ova":
            _export_ova(runner, disk, tmp, hardware, progress)
        else:
            img.convert(runner, disk, "qcow2", tmp, fmt, options=_OPTIONS[fmt], progress=progress)
        # link, not rename: fails instead of replacing a file that appeared meanwhile.
        os.link(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return target


def _export_ova(
    runner: CommandRunner,
    disk: Path,
    out: Path,
    hardware: Hardware,
    progress: Callable[[float], None] | None,
) -> None:
    work = out.parent / f"{out.name}.d"
    work.mkdir()
    try:
        vmdk_name = f"{hardware.name}-disk1.vmdk"
        vmdk = work / vmdk_name
        img.convert(
            runner, disk, "qcow2", vmdk, "vmdk", options=_OPTIONS["vmdk"], progress=progress
        )
        capacity = int(img.info(runner, disk, "qcow2")["virtual-size"])
        descriptor = ovf.render(
            ovf.ExportSpec(
                name=hardware.name,
                cpus=hardware.cpus,
                memory=hardware.memory,
                disk_file=vmdk_name,
                disk_file_size=vmdk.stat().st_size,
                disk_capacity=capacity,
                nics=hardware.nics,
                description=hardware.description,
            )
        )
        ova.write(out, f"{hardware.name}.ovf", descriptor, [(vmdk_name, vmdk)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
