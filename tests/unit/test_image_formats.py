"""Format detection and header safety rules, on hand-built headers."""

from __future__ import annotations

import struct

import pytest

from hangar.services.storage import formats
from hangar.services.storage.formats import UnsafeImage


def qcow2_header(
    *,
    version: int = 3,
    backing: bytes = b"",
    incompatible: int = 0,
    crypt: int = 0,
    extensions: bytes = b"",
    size: int = 1 << 20,
) -> bytes:
    header_length = 104 if version == 3 else 72
    head = bytearray(4096)
    backing_offset = 1024 if backing else 0
    struct.pack_into(">4sIQII", head, 0, b"QFI\xfb", version, backing_offset, len(backing), 16)
    struct.pack_into(">QI", head, 24, size, crypt)
    if version == 3:
        struct.pack_into(">QQQII", head, 72, incompatible, 0, 0, 4, header_length)
    head[header_length : header_length + len(extensions)] = extensions
    if backing:
        head[1024 : 1024 + len(backing)] = backing
    return bytes(head)


def extension(kind: int, data: bytes) -> bytes:
    padded = data + b"\x00" * (-len(data) % 8)
    return struct.pack(">II", kind, len(data)) + padded


def vmdk_sparse(descriptor_sectors: int = 1, capacity_sectors: int = 2048) -> bytes:
    head = bytearray(4096)
    struct.pack_into("<4sII", head, 0, b"KDMV", 1, 3)
    struct.pack_into("<QQQQ", head, 12, capacity_sectors, 128, 1, descriptor_sectors)
    return bytes(head)


GOOD_DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=bf42f87b
parentCID=ffffffff
createType="monolithicSparse"
# Extent description
RW 20480 SPARSE "disk.vmdk"
ddb.adapterType = "ide"
"""


def test_detects_each_format_from_its_bytes() -> None:
    assert formats.detect(qcow2_header()) == "qcow2"
    assert formats.detect(vmdk_sparse()) == "vmdk"
    assert formats.detect(b"# Disk DescriptorFile\n") == "vmdk"
    vdi = bytearray(512)
    vdi[0x40:0x44] = formats.VDI_SIGNATURE
    assert formats.detect(bytes(vdi)) == "vdi"
    assert formats.detect(b"vhdxfile" + bytes(100)) == "vhdx"
    tar = bytearray(512)
    tar[257:263] = b"ustar\x00"
    assert formats.detect(bytes(tar)) == "ova"
    assert formats.detect(b"\x00" * 512) == "raw"


def test_clean_qcow2_passes_with_its_size() -> None:
    facts = formats.check_header(qcow2_header(size=5 << 30), "qcow2")
    assert facts.virtual_size == 5 << 30
    assert formats.check_header(qcow2_header(version=2), "qcow2").format == "qcow2"


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (qcow2_header(backing=b"/etc/shadow"), "backing file ('/etc/shadow')"),
        (qcow2_header(incompatible=formats.QCOW2_INCOMPAT_DATA_FILE), "external data file"),
        (
            qcow2_header(extensions=extension(formats.QCOW2_EXT_DATA_FILE, b"/dev/sda")),
            "external data file",
        ),
        (qcow2_header(crypt=1), "encrypted"),
        (qcow2_header(version=1), "qcow version 1"),
        (qcow2_header(extensions=extension(0x1234, b"x") * 600), "do not end"),
    ],
)
def test_unsafe_qcow2_is_refused(head: bytes, reason: str) -> None:
    with pytest.raises(UnsafeImage) as info:
        formats.check_header(head, "qcow2", what="'x.qcow2'")
    assert reason in info.value.message and "'x.qcow2'" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize(
    "head",
    [qcow2_header(), vmdk_sparse(), b"vhdxfile" + bytes(100), b"# Disk DescriptorFile\nx",
     b"QED\x00" + bytes(100), b"conectix" + bytes(100), b"LUKS\xba\xbe" + bytes(100)],
)  # fmt: skip
def test_raw_that_starts_like_an_image_is_refused(head: bytes) -> None:
    with pytest.raises(UnsafeImage, match="said to be raw but starts like"):
        formats.check_header(head, "raw")


def test_claimed_format_must_match_the_bytes() -> None:
    with pytest.raises(UnsafeImage, match="said to be vdi but its header is qcow2"):
        formats.check_header(qcow2_header(), "vdi")


def test_vmdk_descriptor_file_is_refused() -> None:
    with pytest.raises(UnsafeImage, match="VMDK descriptor file"):
        formats.check_header(b"# Disk DescriptorFile\nversion=1\n", "vmdk")


def test_embedded_descriptor_rules() -> None:
    assert formats.check_vmdk_descriptor(GOOD_DESCRIPTOR) == "monolithicSparse"
    stream = GOOD_DESCRIPTOR.replace("monolithicSparse", "streamOptimized")
    assert formats.check_vmdk_descriptor(stream) == "streamOptimized"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (('RW 20480 SPARSE "disk.vmdk"', 'RW 20480 FLAT "/etc/shadow" 0'), "type FLAT"),
        (('RW 20480 SPARSE "disk.vmdk"', 'RW 20480 SPARSE "/etc/shadow"'), "not a plain name"),
        (('RW 20480 SPARSE "disk.vmdk"', 'RW 20480 SPARSE "../x.vmdk"'), "not a plain name"),
        (('RW 20480 SPARSE "disk.vmdk"', 'RW 20480 SPARSE "json:{}"'), "not a plain name"),
        (('RW 20480 SPARSE "disk.vmdk"', 'RW 1 SPARSE "a.vmdk"\nRW 1 SPARSE "b.vmdk"'),
         "2 extents"),
        (('RW 20480 SPARSE "disk.vmdk"', 'RW 20480 VMFS "/dev/sda"'), "type VMFS"),
        (("monolithicSparse", "monolithicFlat"), "create type 'monolithicFlat'"),
        (("monolithicSparse", "fullDevice"), "create type 'fullDevice'"),
        (("parentCID=ffffffff", 'parentCID=1234\nparentFileNameHint="/x.vmdk"'), "parent"),
    ],
)  # fmt: skip
def test_unsafe_embedded_descriptor_is_refused(change: tuple[str, str], reason: str) -> None:
    with pytest.raises(UnsafeImage) as info:
        formats.check_vmdk_descriptor(GOOD_DESCRIPTOR.replace(*change))
    assert reason in info.value.message


def test_vmdk_sparse_header_gives_size_and_descriptor_place() -> None:
    header = formats.vmdk_sparse_header(vmdk_sparse(descriptor_sectors=2, capacity_sectors=4096))
    assert (header.capacity, header.descriptor_offset, header.descriptor_size) == (
        4096 * 512,
        512,
        1024,
    )
    with pytest.raises(UnsafeImage, match="embedded VMDK descriptor is"):
        formats.vmdk_sparse_header(vmdk_sparse(descriptor_sectors=1000))


def test_differencing_vdi_is_refused() -> None:
    vdi = bytearray(512)
    vdi[0x40:0x44] = formats.VDI_SIGNATURE
    struct.pack_into("<I", vdi, 0x4C, 4)
    with pytest.raises(UnsafeImage, match="type 4"):
        formats.check_header(bytes(vdi), "vdi")
    struct.pack_into("<I", vdi, 0x4C, 1)
    struct.pack_into("<Q", vdi, 0x170, 1 << 30)
    assert formats.check_header(bytes(vdi), "vdi").virtual_size == 1 << 30


def test_qemu_img_info_must_agree() -> None:
    good = {"format": "qcow2", "virtual-size": 100, "filename": "a"}
    assert formats.check_info(good, "qcow2") == 100
    with pytest.raises(UnsafeImage, match="backing file"):
        formats.check_info({**good, "backing-filename": "/etc/passwd"}, "qcow2")
    with pytest.raises(UnsafeImage, match="data file"):
        formats.check_info(
            {**good, "format-specific": {"data": {"data-file": "/dev/sda"}}}, "qcow2"
        )
    with pytest.raises(UnsafeImage, match="reads it as raw"):
        formats.check_info({**good, "format": "raw"}, "qcow2")
    vmdk = {
        "format": "vmdk",
        "virtual-size": 1,
        "filename": "a.vmdk",
        "format-specific": {"data": {"extents": [{"filename": "/etc/shadow"}]}},
    }
    with pytest.raises(UnsafeImage, match="extent is the file '/etc/shadow'"):
        formats.check_info(vmdk, "vmdk")
