"""Import disk images and OVA appliances from outside into the image store, safely.

The pipeline, for every disk:

1. the format is detected from the file's bytes (or taken from ``--format``
   and checked against them) — QEMU never probes;
2. the header is judged by :mod:`formats` *before* qemu-img opens the file
   (backing files, data files, VMDK extents, raw files that look like images);
3. ``qemu-img info -f FMT`` must agree, and the virtual size must be within
   the limit; ``qemu-img check`` must find no corruption;
4. ``qemu-img convert`` writes a fresh, self-contained qcow2.

Everything happens in a hidden folder inside the store (``.import-*``) that
is renamed into place only when complete: a failed import removes it, and an
interrupted one is swept when hangard starts (:meth:`ImageStore.sweep`).

How an imported image boots: hangar VMs boot by direct kernel boot. When the
imported disk is a whole-disk ext4 root filesystem (hangar's own images, and
round trips of them), the image gets the boot kit of an installed
kernel image (the tiny image's kernel and initramfs, hard-linked into the
image folder) and is launchable. Any other disk is kept as a disk for
firmware boot: its VMs boot it through SeaBIOS (or OVMF with --firmware uefi) on q35.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hangar.errors import Conflict, HostCommandFailed, InvalidInput, NextStep
from hangar.runner import CommandRunner
from hangar.services.progress import Reporter, quiet, span
from hangar.services.qemu import img
from hangar.services.storage import formats, ova, ovf
from hangar.services.storage.formats import Format, UnsafeImage
from hangar.services.storage.images import MANIFEST, ImageStore
from hangar.spec.image import ImageDefaults, ImageManifest
from hangar.spec.units import format_size

EXT4_MAGIC_OFFSET = 1080
EXT4_MAGIC = b"\x53\xef"
DEFAULT_MAX_VIRTUAL_SIZE = 2 * 1024**4


@dataclass(frozen=True)
class BootKit:
    """A kernel and initramfs (from an installed image) that boot an ext4 root disk."""

    image: str
    kernel: Path
    initrd: Path | None
    cmdline: str
    boot_marker: str


@dataclass(frozen=True)
class ImportRequest:
    source: Path
    name: str
    format: Format | None = None
    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class Importer:
    def __init__(self, store: ImageStore, runner: CommandRunner):
        self.store = store
        self.runner = runner

    def run(
        self, request: ImportRequest, boot: BootKit | None, progress: Reporter = quiet
    ) -> ImageManifest:
        """Import ``request.source`` as image ``request.name``.

        Raises :class:`UnsafeImage` (refused, with the reason), :class:`InvalidInput`,
        :class:`Conflict` (name taken) or :class:`HostCommandFailed`. Nothing is
        left behind on any failure.
        """
        source = request.source
        target = self.store.path(request.name)
        if target.exists():
            raise Conflict(
                f"an image named '{request.name}' already exists",
                hint="import it under another name, or delete the image first",
                details={"image": request.name},
                action=NextStep.DELETE_IMAGE,
            )
        st = _stat_regular(source)
        with source.open("rb") as f:
            head = f.read(formats.HEAD_SIZE)
        fmt = request.format or formats.detect(head)
        what = f"'{source.name}'"
        self.store.root.mkdir(parents=True, exist_ok=True)
        tmp = self.store.root / f".import-{request.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            defaults = ImageDefaults()
            description = f"imported from {source.name} ({fmt})"
            if fmt == "ova":
                if not formats.is_tar(head):
                    raise formats.UnsafeImage(
                        f"refusing {what}: it is said to be an OVA but is not a tar archive",
                        hint="give the right format, or none to detect it",
                    )
                disk, disk_fmt, defaults = self._unpack_ova(source, tmp, request, progress)
                description = f"imported from {source.name} (OVA, {disk_fmt} disk)"
            else:
                disk, disk_fmt = source, fmt
                if st.st_size == 0:
                    raise InvalidInput(f"{what} is empty", hint="give an image file")
            progress(f"checking {disk_fmt} image", percent=5)
            size = self._check_disk(disk, disk_fmt, request.max_virtual_size, what)
            step = f"converting {format_size(size)} {disk_fmt} disk to qcow2"
            progress(step, percent=10)
            img.convert(
                self.runner,
                disk,
                disk_fmt,
                tmp / "disk.qcow2",
                "qcow2",
                progress=span(progress, step, 10, 99),
            )
            if disk != source:
                disk.unlink()
            manifest = self._manifest(request.name, tmp, size, defaults, description, boot)
            (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            # The folder appears complete or not at all.
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress(f"image '{request.name}' imported")
        return manifest

    def _check_disk(self, disk: Path, fmt: str, limit: int, what: str) -> int:
        if fmt not in formats.DISK_FORMATS:
            raise InvalidInput(
                f"{what}: '{fmt}' is not a disk format hangar imports",
                hint=f"formats: {', '.join(formats.FORMATS)}",
            )
        claimed: Format = fmt
        with disk.open("rb") as f:
            head = f.read(formats.HEAD_SIZE)
            facts = formats.check_header(head, claimed, what=what)
            if claimed == "raw":
                formats.check_raw_size(os.fstat(f.fileno()).st_size, what=what)
            if claimed == "vmdk":
                header = formats.vmdk_sparse_header(head, what)
                f.seek(header.descriptor_offset)
                text = f.read(header.descriptor_size).decode("utf-8", errors="replace")
                formats.check_vmdk_descriptor(text, what=what)
        if facts.virtual_size is not None:
            _check_size(facts.virtual_size, limit, what)
        try:
            info = img.info(self.runner, disk, claimed, untrusted=True)
        except HostCommandFailed as exc:
            raise UnsafeImage(
                f"refusing {what}: qemu-img cannot read it as {claimed}: {exc.output.strip()}",
                hint="check the file and its format; differencing images are not supported",
            ) from exc
        size = formats.check_info(info, claimed, what=what)
        _check_size(size, limit, what)
        try:
            img.check(self.runner, disk, claimed, untrusted=True)
        except HostCommandFailed as exc:
            raise UnsafeImage(
                f"refusing {what}: 'qemu-img check' finds it damaged: {exc.output.strip()[-500:]}",
                hint="repair it where it came from (e.g. 'qemu-img check -r all' on a copy), "
                "then import it again",
            ) from exc
        return size

    def _unpack_ova(
        self, source: Path, tmp: Path, request: ImportRequest, progress: Reporter
    ) -> tuple[Path, str, ImageDefaults]:
        progress("reading the OVA")
        with ova.OvaReader.open(source) as archive:
            descriptor_name = archive.descriptor_name()
            text = archive.read_text(descriptor_name, ovf.MAX_DESCRIPTOR)
            appliance = ovf.parse(text)
            if len(appliance.disks) != 1:
                raise InvalidInput(
                    f"the OVA has {len(appliance.disks)} disks; hangar images hold one disk",
                    hint="import an appliance with one disk, or convert its disks one by one",
                )
            sums: dict[str, tuple[str, str]] = {}
            mf_name = descriptor_name.rsplit(".", 1)[0] + ".mf"
            if mf_name in archive.members:
                sums = ova.parse_manifest(archive.read_text(mf_name, 1024 * 1024))
                staged = tmp / "descriptor.ovf"
                staged.write_text(text)
                ova.verify(sums, descriptor_name, staged)
                staged.unlink()
            disk = appliance.disks[0]
            if disk.capacity > request.max_virtual_size:
                _check_size(disk.capacity, request.max_virtual_size, f"the OVA's disk {disk.href}")
            progress(f"unpacking {disk.href}")
            unpacked = tmp / "source.disk"
            member_limit = request.max_virtual_size + 64 * 1024 * 1024
            archive.extract(disk.href, unpacked, limit=member_limit)
            ova.verify(sums, disk.href, unpacked)
        with unpacked.open("rb") as f:
            disk_fmt = formats.detect(f.read(formats.HEAD_SIZE))
        if disk_fmt == "ova":
            raise UnsafeImage("refusing the OVA: its disk is itself a tar archive")
        defaults = ImageDefaults(
            cpus=max(1, appliance.cpus),
            memory=appliance.memory,
            disk=max(disk.capacity, 1),
            nics=appliance.nics,
        )
        return unpacked, disk_fmt, defaults

    def _manifest(
        self,
        name: str,
        folder: Path,
        size: int,
        defaults: ImageDefaults,
        description: str,
        boot: BootKit | None,
    ) -> ImageManifest:
        head = img.read_head(self.runner, folder / "disk.qcow2", "qcow2", 4096, folder / "head")
        is_ext4 = head[EXT4_MAGIC_OFFSET : EXT4_MAGIC_OFFSET + 2] == EXT4_MAGIC
        kernel = initrd = None
        cmdline, marker = "", ""
        if is_ext4 and boot is not None:
            kernel = "vmlinux"
            _link_or_copy(boot.kernel, folder / kernel)
            if boot.initrd is not None:
                initrd = "initrd.img"
                _link_or_copy(boot.initrd, folder / initrd)
            cmdline, marker = boot.cmdline, boot.boot_marker
            description += f"; boots with the kernel of image '{boot.image}'"
        elif is_ext4:
            description += "; ext4 root disk, but no kernel image is installed to boot it"
        else:
            description += "; a disk for BIOS boot (not launchable yet)"
        return ImageManifest(
            name=name,
            recipe_hash=uuid.uuid4().hex,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            disk="disk.qcow2",
            disk_virtual_size=size,
            boot_marker=marker,
            defaults=defaults.model_copy(update={"disk": max(defaults.disk, size)}),
            description=description,
            origin="import",
        )


def _stat_regular(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read '{path}': {exc.strerror}", hint="give the path of an image file"
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(
            f"'{path}' is not a regular file", hint="hangar imports image files, not devices"
        )
    return st


def _check_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise UnsafeImage(
            f"refusing {what}: its virtual size {format_size(size)} is over the limit of "
            f"{format_size(limit)}",
            hint="raise the import's size limit (or HANGAR_MAX_IMAGE_SIZE for hangard) "
            "if the image is trusted",
        )
