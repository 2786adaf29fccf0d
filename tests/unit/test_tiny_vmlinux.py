"""vmlinux carving on synthetic bzImage-like blobs."""

from __future__ import annotations

import lzma
import struct

import pytest

from hangar.errors import InvalidInput
from hangar.services.storage.tiny.vmlinux import extract_vmlinux

FAKE_ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64


def bzimage(
    payload: bytes, *, setup_sects: int = 3, version: int = 0x20F, offset: int = 0x300
) -> bytes:
    """A blob laid out like a bzImage: setup sectors, then code holding ``payload``."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    # A real payload ends with the 4-byte uncompressed size; keep that quirk.
    payload = payload + struct.pack("<I", len(FAKE_ELF))
    struct.pack_into("<II", setup, 0x248, offset, len(payload))
    code = b"\x90" * offset + payload + b"\xcc" * 100
    return bytes(setup) + code


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)


def test_extracts_the_elf_from_the_header_fields() -> None:
    assert extract_vmlinux(bzimage(xz(FAKE_ELF))) == FAKE_ELF


def test_finds_the_stream_by_magic_on_old_boot_protocols() -> None:
    # Before boot protocol 2.08 there are no payload fields: search for the magic.
    blob = bzimage(xz(FAKE_ELF), version=0x206)
    assert extract_vmlinux(blob) == FAKE_ELF


def test_falls_back_to_search_when_the_offset_field_is_wrong() -> None:
    blob = bytearray(bzimage(xz(FAKE_ELF), setup_sects=2))
    struct.pack_into("<I", blob, 0x248, 7)
    assert extract_vmlinux(bytes(blob)) == FAKE_ELF


def test_rejects_a_blob_without_a_setup_header() -> None:
    with pytest.raises(InvalidInput, match="HdrS"):
        extract_vmlinux(b"\0" * 4096)


def test_rejects_a_bzimage_without_xz() -> None:
    gzip_like = b"\x1f\x8b\x08\x00" + b"\0" * 500
    with pytest.raises(InvalidInput, match="no XZ stream"):
        extract_vmlinux(bzimage(gzip_like))


def test_rejects_a_payload_that_is_not_elf() -> None:
    with pytest.raises(InvalidInput, match="not an ELF"):
        extract_vmlinux(bzimage(xz(b"MZ this is not an ELF file")))


def test_rejects_a_truncated_stream() -> None:
    stream = xz(FAKE_ELF)
    blob = bzimage(stream)[: -(len(stream) // 2 + 104)]
    with pytest.raises(InvalidInput, match=r"truncated|corrupt"):
        extract_vmlinux(blob)
