"""The kernel part of the tiny image: vmlinux and the initramfs modules, cached.

Unpacking the 70 MB linux-image .deb and decompressing its bzImage take a few
seconds, so the results are kept in ``cache_dir/kernel/<package>-<digest>/`` and
later builds only copy them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.runner import CommandRunner
from hangar.services.storage.tiny import debs, kmod
from hangar.services.storage.tiny.vmlinux import extract_vmlinux

# Everything in Debian's kernel the guest needs is a module (=m). crc32c_generic
# is ext4's and jbd2's checksum (a soft dependency named by alias, so listed
# here); evdev gives acpid the power button's /dev/input/event*; virtio_rng feeds
# the guest's entropy pool from the host (CONFIG_HW_RANDOM_VIRTIO=m;
# VMConfig.entropy); vmgenid, its other half, is built in (CONFIG_VMGENID=y).
MODULES = [
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
    "button",
    "evdev",
    "virtio_rng",
]


@dataclass(frozen=True)
class KernelParts:
    vmlinux: Path
    # Module files in load order (dependencies first).
    modules: list[Path]


def kernel_parts(
    runner: CommandRunner, deb: Path, cache_dir: Path, modules: list[str] = MODULES
) -> KernelParts:
    """vmlinux and the ordered modules of ``deb``, from the cache or made now."""
    digest = hashlib.sha256("\n".join(modules).encode()).hexdigest()[:12]
    folder = cache_dir / "kernel" / f"{deb.stem}-{digest}"
    if not (folder / "load-order").is_file():
        _prepare(runner, deb, folder, modules)
    names = (folder / "load-order").read_text().split()
    return KernelParts(folder / "vmlinux", [folder / "modules" / f"{n}.ko" for n in names])


def _prepare(runner: CommandRunner, deb: Path, folder: Path, modules: list[str]) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tree = debs.unpack(runner, deb, tmp / "deb")
        bzimages = sorted((tree / "boot").glob("vmlinuz-*"))
        module_dirs = sorted((tree / "lib" / "modules").glob("*"))
        if len(bzimages) != 1 or len(module_dirs) != 1:
            raise InvalidInput(f"{deb.name} does not hold exactly one kernel and module tree")
        (tmp / "vmlinux").write_bytes(extract_vmlinux(bzimages[0].read_bytes()))
        ordered = kmod.load_order(modules, kmod.module_index(module_dirs[0]))
        (tmp / "modules").mkdir()
        for path in ordered:
            shutil.copyfile(path, tmp / "modules" / f"{kmod.module_name(path)}.ko")
        names = [kmod.module_name(p) for p in ordered]
        (tmp / "load-order").write_text("".join(f"{n}\n" for n in names))
        shutil.rmtree(tree)
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another build finished the same folder first; theirs is as good.
            if not (folder / "load-order").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
