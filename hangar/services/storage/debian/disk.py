"""The debian-12 disk: a GPT disk that boots by BIOS and by UEFI, assembled without a loop
device (except for extlinux, which installs into a mounted filesystem).

Layout (512-byte sectors)::

    0          protective MBR with SYSLINUX's gptmbr.bin boot code (BIOS)
    2048       EFI system partition, FAT, holding a standalone GRUB as BOOTX64.EFI
    ESP_END    root ext4 (label hangar-root), legacy-BIOS-bootable, SYSLINUX in /boot
    end - 2048 free, then the backup GPT

BIOS: SeaBIOS -> gptmbr.bin -> the bootable partition's extlinux -> kernel.
UEFI: OVMF -> \\EFI\\BOOT\\BOOTX64.EFI (GRUB with its config built in) -> ext4 -> kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
ESP_START = 2048
ESP_SECTORS = 65536  # 32 MiB
ROOT_START = ESP_START + ESP_SECTORS
TAIL_SECTORS = 2048  # room for the backup GPT
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
MBR_CODE = 440  # boot code ends here; the partition table follows
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Layout:
    total_bytes: int

    @property
    def root_sectors(self) -> int:
        return self.total_bytes // SECTOR - ROOT_START - TAIL_SECTORS

    @property
    def root_bytes(self) -> int:
        return self.root_sectors * SECTOR

    @property
    def esp_bytes(self) -> int:
        return ESP_SECTORS * SECTOR


def sfdisk_script(layout: Layout) -> str:
    """The partition table as sfdisk reads it. Pure."""
    return (
        "label: gpt\n"
        "unit: sectors\n"
        f"start={ESP_START}, size={ESP_SECTORS}, type={ESP_TYPE}, name=esp\n"
        f"start={ROOT_START}, size={layout.root_sectors}, type={LINUX_TYPE}, name=root, "
        'attrs="LegacyBIOSBootable"\n'
    )


def boot_cmdline(root_uuid: str, version: str) -> str:
    """Kernel arguments for disk boot (the bootloaders'): the image's own console and
    timer flags, since hangar's -append does not reach a bootloader."""
    return (
        f"root=UUID={root_uuid} ro console=tty0 console=ttyS0,115200 panic=-1 no_timer_check"
        f" hangar.image=debian-12 hangar.kernel={version}"
    )


def extlinux_conf(root_uuid: str, version: str) -> str:
    return (
        "# hangar: BIOS boot of debian-12 (SYSLINUX)\n"
        "SERIAL 0 115200\n"
        "DEFAULT debian\n"
        "TIMEOUT 0\n"
        "LABEL debian\n"
        f"  LINUX /boot/vmlinuz-{version}\n"
        f"  INITRD /boot/initrd.img-{version}\n"
        f"  APPEND {boot_cmdline(root_uuid, version)}\n"
    )


def grub_cfg(root_uuid: str, version: str) -> str:
    """Built into BOOTX64.EFI: GRUB finds the root partition by its filesystem UUID."""
    return (
        "# hangar: UEFI boot of debian-12 (standalone GRUB)\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=0\n"
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        f"linux /boot/vmlinuz-{version} {boot_cmdline(root_uuid, version)}\n"
        f"initrd /boot/initrd.img-{version}\n"
        "boot\n"
    )


# GRUB modules BOOTX64.EFI needs for the config above.
GRUB_MODULES = "part_gpt ext2 fat linux normal search search_fs_uuid serial terminal gzio echo boot"


def copy_into(source: Path, target: Path, offset: int) -> None:
    """Write ``source`` into ``target`` at ``offset`` bytes, skipping zero blocks
    (``target`` stays sparse: a 2 GiB disk holds ~800 MiB of data)."""
    zero = bytes(CHUNK)
    with source.open("rb") as src, target.open("r+b") as dst:
        position = offset
        while chunk := src.read(CHUNK):
            if chunk != zero[: len(chunk)]:
                dst.seek(position)
                dst.write(chunk)
            position += len(chunk)


def install_mbr_code(disk: Path, code: bytes) -> None:
    """Put boot code into the first 440 bytes, keeping the partition table after them."""
    if len(code) > MBR_CODE:
        code = code[:MBR_CODE]
    with disk.open("r+b") as f:
        f.write(code)
