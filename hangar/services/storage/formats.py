"""Disk image formats from outside: detect them from their bytes, and refuse unsafe ones.

Pure: every function takes the bytes it judges (the head of a file, a VMDK
descriptor), so unit tests cover each rule. hangar never lets QEMU or qemu-img
probe a format, and it reads an image's header itself *before* qemu-img opens
it: opening a qcow2 whose external data file or a VMDK whose extent names a
host file would already make qemu-img open that host file.

Refused, with the reason (:class:`UnsafeImage`):

* qcow2 with a backing file, an external data file, or encryption;
* VMDK that is a descriptor file (it names other files), or whose embedded
  descriptor names a parent, another create type than monolithicSparse or
  streamOptimized, or any extent but one sparse extent of itself;
* VDI that is a differencing or undo image;
* a file claimed to be raw that starts like an image of another format.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Literal

from hangar.errors import UnsafeImage

__all__ = ["UnsafeImage"]

Format = Literal["qcow2", "raw", "vmdk", "vdi", "vhdx", "ova"]
DISK_FORMATS: tuple[Format, ...] = ("qcow2", "raw", "vmdk", "vdi", "vhdx")
FORMATS: tuple[Format, ...] = (*DISK_FORMATS, "ova")

# Enough to hold every header judged here (VMDK embedded descriptors are read
# separately, at the offset their header gives).
HEAD_SIZE = 64 * 1024

QCOW_MAGIC = b"QFI\xfb"
VMDK_MAGIC = b"KDMV"
VDI_SIGNATURE = b"\x7f\x10\xda\xbe"  # 0xbeda107f little-endian, at 0x40
VHDX_MAGIC = b"vhdxfile"
VMDK_DESCRIPTOR = b"# Disk DescriptorFile"
MAX_DESCRIPTOR = 64 * 1024

QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_EXT_END = 0

# Other formats' signatures at offset 0: a "raw" file starting like one of
# these would be read as that format by anything that probes it later.
_OTHER_SIGNATURES: dict[bytes, str] = {
    QCOW_MAGIC: "qcow/qcow2",
    b"QED\x00": "QED",
    VMDK_MAGIC: "VMDK",
    b"COWD": "VMDK (version 3)",
    VMDK_DESCRIPTOR: "a VMDK descriptor",
    VHDX_MAGIC: "VHDX",
    b"conectix": "VHD",
    b"LUKS\xba\xbe": "LUKS",
    b"Bochs Virtual HD Image": "Bochs",
    b"#!/bin/sh\n#V2.0 Format": "cloop",
    b"WithoutFreeSpace": "Parallels",
    b"WithouFreSpacExt": "Parallels",
}


@dataclass(frozen=True)
class HeaderFacts:
    """What the header says, before qemu-img is asked."""

    format: Format
    virtual_size: int | None


def _refuse(what: str, why: str) -> UnsafeImage:
    return UnsafeImage(
        f"refusing {what}: {why}",
        hint="hangar imports only self-contained images; flatten it first "
        "(e.g. 'qemu-img convert -O qcow2' on a machine you trust), then import the result",
    )


def is_tar(head: bytes) -> bool:
    return len(head) >= 263 and head[257:262] == b"ustar"


def detect(head: bytes) -> Format:
    """The format of an image from its first bytes; ``raw`` when nothing matches."""
    if head.startswith(QCOW_MAGIC):
        return "qcow2"
    if head.startswith(VMDK_MAGIC) or head.startswith(VMDK_DESCRIPTOR) or head.startswith(b"COWD"):
        return "vmdk"
    if head[0x40:0x44] == VDI_SIGNATURE:
        return "vdi"
    if head.startswith(VHDX_MAGIC):
        return "vhdx"
    if is_tar(head):
        return "ova"
    return "raw"


def looks_like(head: bytes) -> str | None:
    """The name of the image format ``head`` starts like, if any."""
    for signature, name in _OTHER_SIGNATURES.items():
        if head.startswith(signature):
            return name
    if head[0x40:0x44] == VDI_SIGNATURE:
        return "VDI"
    return None


# A disk is a whole number of 512-byte sectors; a raw file that is not (a text
# file, a truncated download, /etc/passwd) is not a disk image.
SECTOR = 512


def check_raw_size(size: int, *, what: str = "the image") -> None:
    """Refuse a raw disk whose size is not a whole number of 512-byte sectors."""
    if size % SECTOR:
        raise UnsafeImage(
            f"refusing {what}: as a raw disk its size ({size} bytes) would have to be a "
            f"multiple of {SECTOR} bytes, and it is not: it is not a disk image",
            hint="check that this is the disk you meant (a raw disk is whole 512-byte "
            "sectors), or give its real format",
        )


def check_header(head: bytes, claimed: Format, *, what: str = "the image") -> HeaderFacts:
    """Check that ``head`` is a safe image of format ``claimed``.

    Raises :class:`UnsafeImage` when it is not what it claims or refers to
    anything outside itself. For VMDK the embedded descriptor is checked
    separately (:func:`check_vmdk_descriptor`), as it lies further in.
    """
    found = detect(head)
    if claimed == "raw":
        other = looks_like(head)
        if other is not None:
            raise _refuse(what, f"it is said to be raw but starts like a {other} image")
        return HeaderFacts("raw", None)
    if found != claimed:
        raise _refuse(what, f"it is said to be {claimed} but its header is {found}")
    if claimed == "qcow2":
        return HeaderFacts("qcow2", _check_qcow2(head, what))
    if claimed == "vmdk":
        return HeaderFacts("vmdk", vmdk_sparse_header(head, what).capacity)
    if claimed == "vdi":
        return HeaderFacts("vdi", _check_vdi(head, what))
    return HeaderFacts(claimed, None)


def _check_qcow2(head: bytes, what: str) -> int:
    if len(head) < 72:
        raise _refuse(what, "its qcow2 header is truncated")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    (size,) = struct.unpack_from(">Q", head, 24)
    (crypt,) = struct.unpack_from(">I", head, 32)
    if version not in (2, 3):
        raise _refuse(what, f"qcow version {version} is not supported (only qcow2 v2/v3)")
    if backing_offset or backing_size:
        name = head[backing_offset : backing_offset + min(backing_size, 1023)]
        shown = name.decode(errors="replace") if backing_offset + backing_size <= len(head) else ""
        raise _refuse(
            what,
            "its qcow2 header names a backing file"
            + (f" ('{shown}')" if shown else "")
            + ": it would read that file from this host",
        )
    if crypt:
        raise _refuse(what, "it is an encrypted qcow2 image")
    header_length = 72
    if version == 3:
        if len(head) < 104:
            raise _refuse(what, "its qcow2 v3 header is truncated")
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        if incompatible & QCOW2_INCOMPAT_DATA_FILE:
            raise _refuse(
                what, "it uses an external data file: it would read and write a host file"
            )
        (header_length,) = struct.unpack_from(">I", head, 100)
    _check_qcow2_extensions(head, header_length, what)
    return int(size)


def _check_qcow2_extensions(head: bytes, offset: int, what: str) -> None:
    while offset + 8 <= len(head):
        kind, length = struct.unpack_from(">II", head, offset)
        if kind == QCOW2_EXT_END:
            return
        if kind == QCOW2_EXT_DATA_FILE:
            raise _refuse(what, "its qcow2 header names an external data file")
        offset += 8 + ((length + 7) & ~7)
    raise _refuse(what, "its qcow2 header extensions do not end within the header")


@dataclass(frozen=True)
class VmdkSparseHeader:
    capacity: int  # bytes
    descriptor_offset: int  # bytes
    descriptor_size: int  # bytes


def vmdk_sparse_header(head: bytes, what: str = "the image") -> VmdkSparseHeader:
    """Parse a VMDK4 sparse extent header. Descriptor files and VMDK3 are refused."""
    if head.startswith(VMDK_DESCRIPTOR):
        raise _refuse(
            what,
            "it is a VMDK descriptor file: it names other files (extents) that would "
            "be read from this host",
        )
    if not head.startswith(VMDK_MAGIC) or len(head) < 80:
        raise _refuse(what, "it is not a monolithic sparse or stream-optimized VMDK")
    capacity, _grain, desc_offset, desc_size = struct.unpack_from("<QQQQ", head, 12)
    if desc_offset == 0 or desc_size == 0:
        raise _refuse(what, "its VMDK header has no embedded descriptor")
    if desc_size * 512 > MAX_DESCRIPTOR:
        raise _refuse(what, f"its embedded VMDK descriptor is {desc_size * 512} bytes long")
    return VmdkSparseHeader(int(capacity) * 512, int(desc_offset) * 512, int(desc_size) * 512)


_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$')
_SAFE_EXTENT_NAME = re.compile(r"^[A-Za-z0-9._ -]+$")


def check_vmdk_descriptor(text: str, *, what: str = "the image") -> str:
    """Check an embedded VMDK descriptor; returns its create type.

    Allowed: createType monolithicSparse or streamOptimized, no parent, exactly
    one SPARSE extent whose name is a plain file name (the image itself).
    """
    settings: dict[str, str] = {}
    extents: list[re.Match[str]] = []
    for raw_line in text.replace("\x00", "").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        extent = _EXTENT.match(line)
        if extent:
            extents.append(extent)
            continue
        key, eq, value = line.partition("=")
        if eq:
            settings[key.strip()] = value.strip().strip('"')
    create_type = settings.get("createType", "")
    if create_type not in ("monolithicSparse", "streamOptimized"):
        raise _refuse(
            what,
            f"VMDK create type '{create_type or 'none'}' is not monolithicSparse or "
            "streamOptimized (other types keep data in separate files or devices)",
        )
    parent_cid = settings.get("parentCID", "ffffffff").lower()
    if "parentFileNameHint" in settings or parent_cid != "ffffffff":
        raise _refuse(what, "it is a VMDK child image: it names a parent image on this host")
    if len(extents) != 1:
        raise _refuse(what, f"its VMDK descriptor lists {len(extents)} extents, not exactly one")
    (extent,) = extents
    kind, name = extent.group(3), extent.group(4) or ""
    if kind != "SPARSE":
        raise _refuse(what, f"its VMDK extent is of type {kind}: it refers to a file or device")
    if not _SAFE_EXTENT_NAME.match(name) or name in (".", ".."):
        raise _refuse(
            what, f"its VMDK extent names '{name}', which is not a plain name of the image itself"
        )
    return create_type


def _check_vdi(head: bytes, what: str) -> int:
    if len(head) < 0x180:
        raise _refuse(what, "its VDI header is truncated")
    (image_type,) = struct.unpack_from("<I", head, 0x4C)
    if image_type not in (1, 2):
        raise _refuse(what, f"it is a VDI image of type {image_type} (undo or differencing)")
    (size,) = struct.unpack_from("<Q", head, 0x170)
    return int(size)


def check_info(info: dict[str, object], claimed: Format, *, what: str = "the image") -> int:
    """Check ``qemu-img info --output=json`` of an image opened as ``claimed``.

    A second line of defence after the header checks: QEMU's own view must
    agree (format, no backing file, no data file, VMDK extents only itself).
    Returns the virtual size.
    """
    if info.get("format") != claimed:
        raise _refuse(what, f"qemu-img reads it as {info.get('format')}, not {claimed}")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise _refuse(what, f"it names a backing file ('{info.get('backing-filename')}')")
    specific = info.get("format-specific")
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    if isinstance(data, dict):
        if data.get("data-file"):
            raise _refuse(what, f"it names an external data file ('{data.get('data-file')}')")
        extents = data.get("extents") or []
        if claimed == "vmdk":
            if not isinstance(extents, list) or len(extents) != 1:
                raise _refuse(what, "qemu-img sees more than one VMDK extent")
            if extents[0].get("filename") != info.get("filename"):
                raise _refuse(what, f"its VMDK extent is the file '{extents[0].get('filename')}'")
    size = info.get("virtual-size")
    if not isinstance(size, int) or size <= 0:
        raise _refuse(what, "qemu-img reports no virtual size")
    return size
