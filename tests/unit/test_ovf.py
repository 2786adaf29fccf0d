"""OVF descriptors: reading hardware, writing one others accept, and OVA member rules."""

from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.services.storage import ova, ovf
from hangar.services.storage.formats import UnsafeImage

SPEC = ovf.ExportSpec(
    name="web",
    cpus=2,
    memory=192 * 1024 * 1024,
    disk_file="web-disk1.vmdk",
    disk_file_size=12345,
    disk_capacity=1 << 30,
    nics=2,
    description="a <test> VM",
)


def test_rendered_descriptor_reads_back_the_same_hardware() -> None:
    appliance = ovf.parse(ovf.render(SPEC))
    assert appliance.name == "web"
    assert (appliance.cpus, appliance.memory, appliance.nics) == (2, 192 * 1024 * 1024, 2)
    assert appliance.disks == (ovf.OvfDisk("vmdisk1", "web-disk1.vmdk", 1 << 30),)
    assert appliance.files == ("web-disk1.vmdk",)


def test_rendered_descriptor_has_what_virtualbox_and_vmware_look_for() -> None:
    root = ET.fromstring(ovf.render(SPEC))
    q = lambda ns, tag: f"{{{ns}}}{tag}"  # noqa: E731
    assert root.tag == q(ovf.OVF, "Envelope")
    for section in ("References", "DiskSection", "NetworkSection", "VirtualSystem"):
        assert root.find(q(ovf.OVF, section)) is not None, section
    disk = root.find(f"{q(ovf.OVF, 'DiskSection')}/{q(ovf.OVF, 'Disk')}")
    assert disk is not None and disk.get(q(ovf.OVF, "format")) == ovf.STREAM_OPTIMIZED
    system = root.find(q(ovf.OVF, "VirtualSystem"))
    assert system is not None
    assert system.find(q(ovf.OVF, "OperatingSystemSection")) is not None
    items = system.findall(f"{q(ovf.OVF, 'VirtualHardwareSection')}/{q(ovf.OVF, 'Item')}")
    kinds = [int(i.findtext(q(ovf.RASD, "ResourceType"), "0")) for i in items]
    assert sorted(kinds) == [3, 4, 6, 10, 10, 17]
    for item in items:  # InstanceID and ElementName are required by the CIM schema
        assert item.findtext(q(ovf.RASD, "InstanceID")) and item.findtext(
            q(ovf.RASD, "ElementName")
        )
    disk_item = next(i for i in items if i.findtext(q(ovf.RASD, "ResourceType")) == "17")
    assert disk_item.findtext(q(ovf.RASD, "Parent")) == "3"  # the SCSI controller
    assert "a &lt;test&gt; VM" in ovf.render(SPEC)


def test_memory_and_capacity_units() -> None:
    text = ovf.render(SPEC).replace(
        "<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>",
        "<rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>",
    ).replace('ovf:capacity="1073741824" ovf:capacityAllocationUnits="byte"',
              'ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^30"')  # fmt: skip
    appliance = ovf.parse(text)
    assert appliance.memory == 192 * 1024**3
    assert appliance.disks[0].capacity == 3 * 1024**3
    assert ovf.units_to_bytes("byte * 2^20") == 1 << 20
    assert ovf.units_to_bytes("MegaBytes") == 1 << 20  # older VirtualBox
    assert ovf.units_to_bytes("byte * 10^3") == 1000
    with pytest.raises(InvalidInput, match="allocation units"):
        ovf.units_to_bytes("furlongs")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (('ovf:href="web-disk1.vmdk"', 'ovf:href="../etc/passwd"'), "not a plain file name"),
        (('ovf:href="web-disk1.vmdk"', 'ovf:href="/etc/passwd"'), "not a plain file name"),
        (('ovf:fileRef="file1"', 'ovf:fileRef="file9"'), "References does not name"),
        (("ovf:/disk/vmdisk1", "ovf:/disk/other"), "DiskSection does not name"),
        (("<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
          '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'),
         "DOCTYPE"),
        (("<References>", "<References"), "well-formed"),
    ],
)  # fmt: skip
def test_bad_descriptors_are_refused(change: tuple[str, str], reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        ovf.parse(ovf.render(SPEC).replace(*change))
    assert reason in info.value.message


def _tar_with(*members: tarfile.TarInfo) -> list[tarfile.TarInfo]:
    return list(members)


def _info(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_info("../evil.vmdk"), "outside its folder"),
        (_info("/etc/cron.d/evil"), "outside its folder"),
        (_info("sub/disk.vmdk"), "outside its folder"),
        (_info("link.vmdk", tarfile.SYMTYPE), "not a regular file"),
        (_info("hard.vmdk", tarfile.LNKTYPE), "not a regular file"),
        (_info("dev", tarfile.BLKTYPE), "not a regular file"),
        (_info("-rf"), "plain file name"),
    ],
)
def test_ova_members_must_be_plain_regular_files(member: tarfile.TarInfo, reason: str) -> None:
    with pytest.raises(UnsafeImage) as info:
        ova.check_members([_info("a.ovf"), member])
    assert reason in info.value.message


def test_duplicate_members_are_refused() -> None:
    with pytest.raises(UnsafeImage, match="appears twice"):
        ova.check_members([_info("a.ovf"), _info("./a.ovf")])


def test_manifest_lines() -> None:
    sums = ova.parse_manifest("SHA256(a.ovf)= AB12\nSHA1 (b.vmdk) = cd34\n")
    assert sums == {"a.ovf": ("SHA256", "ab12"), "b.vmdk": ("SHA1", "cd34")}
    with pytest.raises(UnsafeImage, match="not a checksum"):
        ova.parse_manifest("rm -rf /\n")


def test_written_ova_has_descriptor_first_and_a_matching_manifest(tmp_path: Path) -> None:
    disk = tmp_path / "d.vmdk"
    disk.write_bytes(b"disk bytes")
    out = tmp_path / "x.ova"
    ova.write(out, "web.ovf", "<Envelope/>", [("web-disk1.vmdk", disk)])
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["web.ovf", "web.mf", "web-disk1.vmdk"]
        manifest = tar.extractfile("web.mf")
        assert manifest is not None
        sums = ova.parse_manifest(manifest.read().decode())
    with ova.OvaReader.open(out) as reader:
        assert reader.descriptor_name() == "web.ovf"
        digest = reader.extract("web-disk1.vmdk", tmp_path / "copy", limit=1 << 20)
    assert sums["web-disk1.vmdk"] == ("SHA256", digest)
    ova.verify(sums, "web-disk1.vmdk", tmp_path / "copy")
    (tmp_path / "copy").write_bytes(b"tampered")
    with pytest.raises(InvalidInput, match="does not match its manifest"):
        ova.verify(sums, "web-disk1.vmdk", tmp_path / "copy")


def test_reader_refuses_members_the_archive_lacks_and_oversized_ones(tmp_path: Path) -> None:
    out = tmp_path / "x.ova"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        data = b"x" * 100
        info = tarfile.TarInfo("a.ovf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with ova.OvaReader.open(out) as reader:
        with pytest.raises(UnsafeImage, match="does not hold"):
            reader.extract("missing.vmdk", tmp_path / "m", limit=10)
        with pytest.raises(UnsafeImage, match="more than allowed"):
            reader.extract("a.ovf", tmp_path / "m", limit=10)
    assert not (tmp_path / "m").exists()
