"""A real installer ISO, built from Debian packages, for the ISO install tests.

It is a live system of the tiny image: ISOLINUX boots Debian's kernel with the
tiny initramfs, whose ``/init`` is replaced by an installer. The installer
writes the tiny system — a whole-disk ext4 with SYSLINUX installed in its boot
sector, the same kernel and initramfs in ``/boot`` — onto the VM's first disk
and powers off. Afterwards the VM boots from that disk alone (SeaBIOS ->
SYSLINUX -> kernel -> the tiny userland, which prints HANGAR-BOOT-COMPLETE).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

from hangar.services.storage.tiny import cpio

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
DONE = "HANGAR-INSTALLER: done"
CMDLINE = "console=tty0 console=ttyS0 panic=-1 no_timer_check"

INSTALLER_INIT = f"""#!/bin/sh
# hangar test installer: write the tiny system onto /dev/vda, then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do insmod "/lib/modules/$module.ko"; done < /lib/modules/load-order
say() {{ echo "$*"; echo "$*" > /dev/tty0; }}
tries=0
while [ ! -b /dev/vda ] && [ "$tries" -lt 500 ]; do usleep 20000; tries=$((tries + 1)); done
say "HANGAR-INSTALLER: writing the tiny system to /dev/vda"
if gunzip -c /install.img.gz > /dev/vda && sync; then
    say "{DONE}, powering off"
    poweroff -f
fi
say "HANGAR-INSTALLER: failed"
exec sh
"""


def _run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=300)


def _bzimage(image_dir: Path, package_cache: Path, work: Path) -> Path:
    """Debian's bzImage of the tiny image's kernel (from the cached linux-image .deb)."""
    manifest = json.loads((image_dir / "image.json").read_text())
    match = re.search(r"Debian kernel (\S+) and busybox", manifest["description"])
    assert match, manifest["description"]
    [deb] = sorted((package_cache / "debs").glob(f"linux-image-*_{match.group(1)}_amd64.deb"))
    tree = work / "kernel-deb"
    _run("dpkg-deb", "-x", deb, tree)
    [vmlinuz] = sorted((tree / "boot").glob("vmlinuz-*"))
    return vmlinuz


def build_installer_iso(image_dir: Path, package_cache: Path, work: Path) -> Path:
    """Build ``work/installer.iso`` from the installed tiny image in ``image_dir``."""
    manifest = json.loads((image_dir / "image.json").read_text())
    vmlinuz = _bzimage(image_dir, package_cache, work)
    initrd = (image_dir / manifest["initrd"]).read_bytes()

    # The system to install: the tiny disk plus a bootloader and its boot files.
    raw = work / "tiny.raw"
    _run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image_dir / manifest["disk"], raw)
    mnt = work / "mnt"
    mnt.mkdir()
    _run("mount", "-o", "loop", raw, mnt)
    try:
        boot = mnt / "boot"
        (boot / "extlinux").mkdir(parents=True)
        shutil.copyfile(vmlinuz, boot / "vmlinuz")
        (boot / "initrd.img").write_bytes(initrd)
        (boot / "extlinux" / "extlinux.conf").write_text(
            "SERIAL 0 115200\nDEFAULT tiny\nTIMEOUT 0\nLABEL tiny\n  LINUX /boot/vmlinuz\n"
            f"  INITRD /boot/initrd.img\n  APPEND {CMDLINE} root=/dev/vda hangar.name=installed\n"
        )
        _run("extlinux", "--install", boot / "extlinux")
    finally:
        _run("umount", mnt)
    payload = gzip.compress(raw.read_bytes(), compresslevel=1)
    raw.unlink()

    # The installer: the tiny initramfs with a second archive appended (the kernel
    # unpacks both; the later /init wins).
    extra = cpio.archive(
        [
            cpio.file("init", INSTALLER_INIT.encode(), 0o755),
            cpio.file("install.img.gz", payload),
        ]
    )
    stage = work / "iso"
    (stage / "isolinux").mkdir(parents=True)
    (stage / "boot").mkdir()
    shutil.copyfile(ISOLINUX, stage / "isolinux" / "isolinux.bin")
    shutil.copyfile(LDLINUX, stage / "isolinux" / "ldlinux.c32")
    (stage / "isolinux" / "isolinux.cfg").write_text(
        "SERIAL 0 115200\nDEFAULT install\nTIMEOUT 0\nLABEL install\n  KERNEL /boot/vmlinuz\n"
        f"  INITRD /boot/installer.img\n  APPEND {CMDLINE}\n"
    )
    shutil.copyfile(vmlinuz, stage / "boot" / "vmlinuz")
    (stage / "boot" / "installer.img").write_bytes(initrd + extra)
    iso = work / "installer.iso"
    _run(
        "xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-V", "HANGAR_INSTALL",
        "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", stage,
    )  # fmt: skip
    shutil.rmtree(stage)
    return iso
