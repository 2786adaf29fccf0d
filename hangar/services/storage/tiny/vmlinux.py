"""Carve the uncompressed ``vmlinux`` out of a Debian bzImage.

Debian ships only an XZ-compressed bzImage. Under TCG the in-guest XZ
decompressor costs ~3 s of every boot, while QEMU boots an uncompressed ELF
vmlinux straight through its PVH entry point. The bzImage's payload *is* that
ELF, compressed: decompress it once here, at build time.

Layout (https://www.kernel.org/doc/html/latest/arch/x86/boot.html): the setup
code takes ``setup_sects + 1`` 512-byte sectors; after it comes the
protected-mode code, in which ``payload_offset``/``payload_length`` (boot
protocol >= 2.08) locate the compressed kernel.
"""

from __future__ import annotations

import lzma
import struct

from hangar.errors import InvalidInput

XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"

_SETUP_SECTS = 0x1F1
_HEADER_MAGIC = 0x202  # "HdrS"
_VERSION = 0x206
_PAYLOAD = 0x248  # payload_offset, payload_length (u32 each)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the ELF vmlinux inside ``bzimage``.

    Raises :class:`InvalidInput` when the blob is not a bzImage, holds no XZ
    stream, or the stream does not decompress to an ELF file.
    """
    if len(bzimage) < _PAYLOAD + 8 or bzimage[_HEADER_MAGIC : _HEADER_MAGIC + 4] != b"HdrS":
        raise InvalidInput(
            "not a bzImage: no 'HdrS' setup header", hint="pass the kernel's /boot/vmlinuz file"
        )
    stream = _xz_stream(bzimage)
    try:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        # The payload ends with a 4-byte size trailer: unused_data, ignored.
        elf = decompressor.decompress(stream)
    except lzma.LZMAError as exc:
        raise InvalidInput(f"the bzImage's XZ payload is corrupt: {exc}") from exc
    if not decompressor.eof:
        raise InvalidInput("the bzImage's XZ payload is truncated")
    if not elf.startswith(ELF_MAGIC):
        raise InvalidInput(
            "the bzImage's payload is not an ELF file",
            hint="this kernel was not built with CONFIG_KERNEL_XZ; use a Debian kernel",
        )
    return elf


def _xz_stream(bzimage: bytes) -> bytes:
    """The bytes from the XZ magic on: from the header fields, else by searching."""
    setup_sects = bzimage[_SETUP_SECTS] or 4  # 0 means 4, for very old kernels
    code_start = (setup_sects + 1) * 512
    (version,) = struct.unpack_from("<H", bzimage, _VERSION)
    if version >= 0x208:
        offset, length = struct.unpack_from("<II", bzimage, _PAYLOAD)
        start = code_start + offset
        if bzimage[start : start + len(XZ_MAGIC)] == XZ_MAGIC:
            return bzimage[start : start + length]
    start = bzimage.find(XZ_MAGIC, code_start)
    if start < 0:
        raise InvalidInput(
            "no XZ stream in the bzImage",
            hint="this kernel was not built with CONFIG_KERNEL_XZ; use a Debian kernel",
        )
    return bzimage[start:]
