"""OVF 1.x descriptors: read the hardware of an appliance, write one VirtualBox and VMware accept.

Pure: text in, models out, and back. Only what hangar uses is read: the files
the descriptor references, its disks (file and capacity), and the virtual
hardware items for CPUs (ResourceType 3), memory (4), disks (17) and NICs (10).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from hangar.errors import InvalidInput

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

RT_CPU, RT_MEMORY, RT_SCSI, RT_NIC, RT_DISK = 3, 4, 6, 10, 17
MAX_DESCRIPTOR = 1024 * 1024
_UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


@dataclass(frozen=True)
class OvfDisk:
    disk_id: str
    href: str  # a file named in References
    capacity: int  # bytes


@dataclass(frozen=True)
class Appliance:
    """What an OVF descriptor says about its one virtual system."""

    name: str
    cpus: int
    memory: int  # bytes
    disks: tuple[OvfDisk, ...]
    nics: int
    files: tuple[str, ...]  # every file the References section names


def _bad(why: str) -> InvalidInput:
    return InvalidInput(
        f"the OVF descriptor is not usable: {why}",
        hint="export the appliance again as OVF 1.x (OVA) from its hypervisor",
    )


# Older VirtualBox and some tools write names instead of DMTF programmatic units.
_NAMED_UNITS = {
    "bytes": 1, "kilobytes": 1024, "kb": 1024, "megabytes": 1024**2, "mb": 1024**2,
    "gigabytes": 1024**3, "gb": 1024**3,
}  # fmt: skip


def units_to_bytes(units: str | None, default: int = 1) -> int:
    """``byte * 2^20`` (or ``MegaBytes``) -> 1048576. No units: ``default``."""
    if not units:
        return default
    named = _NAMED_UNITS.get(units.strip().lower())
    if named is not None:
        return named
    match = _UNITS.match(units)
    if not match:
        raise _bad(f"unknown allocation units '{units}'")
    base, exp = match.group(1), match.group(2)
    return int(base) ** int(exp) if base else 1


def parse(text: str) -> Appliance:
    """Read an OVF descriptor. Raises :class:`InvalidInput` saying what is missing or wrong."""
    if len(text) > MAX_DESCRIPTOR:
        raise _bad(f"it is {len(text)} bytes long")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        # Entities can expand without bound or name host files.
        raise _bad("it declares a DOCTYPE or entities")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise _bad(f"it is not well-formed XML ({exc})") from exc
    if root.tag != _q(OVF, "Envelope"):
        raise _bad(f"its root element is {root.tag}, not an OVF 1.x Envelope")

    files: dict[str, str] = {}
    for f in root.iterfind(f"{_q(OVF, 'References')}/{_q(OVF, 'File')}"):
        file_id, href = f.get(_q(OVF, "id")), f.get(_q(OVF, "href"))
        if not file_id or not href:
            raise _bad("a File in References has no ovf:id or ovf:href")
        if not _PLAIN_NAME.match(href):
            raise _bad(f"File '{file_id}' names '{href}', which is not a plain file name")
        files[file_id] = href

    disks: dict[str, OvfDisk] = {}
    for d in root.iterfind(f"{_q(OVF, 'DiskSection')}/{_q(OVF, 'Disk')}"):
        disk_id, ref = d.get(_q(OVF, "diskId")), d.get(_q(OVF, "fileRef"))
        if not disk_id or not ref:
            raise _bad("a Disk has no ovf:diskId or ovf:fileRef")
        if ref not in files:
            raise _bad(f"Disk '{disk_id}' refers to file '{ref}', which References does not name")
        capacity_text = d.get(_q(OVF, "capacity"), "0")
        if not capacity_text.isdigit():
            raise _bad(f"Disk '{disk_id}' has capacity '{capacity_text}'")
        unit = units_to_bytes(d.get(_q(OVF, "capacityAllocationUnits")))
        disks[disk_id] = OvfDisk(disk_id, files[ref], int(capacity_text) * unit)

    system = root.find(_q(OVF, "VirtualSystem"))
    if system is None:
        raise _bad("it has no VirtualSystem (VirtualSystemCollection is not supported)")
    name = system.get(_q(OVF, "id")) or (system.findtext(_q(OVF, "Name")) or "")
    hardware = system.find(_q(OVF, "VirtualHardwareSection"))
    if hardware is None:
        raise _bad("its VirtualSystem has no VirtualHardwareSection")

    cpus, memory, nics = 1, 0, 0
    used: list[OvfDisk] = []
    for item in hardware.iterfind(_q(OVF, "Item")):
        kind = int(item.findtext(_q(RASD, "ResourceType"), "0").strip() or 0)
        quantity = item.findtext(_q(RASD, "VirtualQuantity"), "").strip()
        if kind == RT_CPU and quantity.isdigit():
            cpus = int(quantity)
        elif kind == RT_MEMORY and quantity.isdigit():
            units = item.findtext(_q(RASD, "AllocationUnits"))
            memory = int(quantity) * units_to_bytes(units, default=1024 * 1024)
        elif kind == RT_NIC:
            nics += 1
        elif kind == RT_DISK:
            host = item.findtext(_q(RASD, "HostResource"), "").strip()
            disk_id = host.rsplit("/", 1)[-1]
            if disk_id not in disks:
                raise _bad(f"a disk item refers to '{host}', which DiskSection does not name")
            used.append(disks[disk_id])
    if not used:
        raise _bad("its virtual hardware has no disk")
    if memory <= 0:
        raise _bad("its virtual hardware gives no memory size")
    return Appliance(
        name=name,
        cpus=cpus,
        memory=memory,
        disks=tuple(used),
        nics=nics,
        files=tuple(files.values()),
    )


@dataclass(frozen=True)
class ExportSpec:
    name: str
    cpus: int
    memory: int  # bytes
    disk_file: str
    disk_file_size: int
    disk_capacity: int  # bytes
    nics: int
    description: str = ""


def render(spec: ExportSpec) -> str:
    """An OVF 1.0 descriptor for one VM with one stream-optimized VMDK disk."""
    mib = spec.memory // (1024 * 1024)
    items = [
        _item(1, "Virtual CPUs", RT_CPU, f"{spec.cpus} virtual CPU(s)",
              [("AllocationUnits", "hertz * 10^6"), ("VirtualQuantity", str(spec.cpus))]),
        _item(2, "Memory", RT_MEMORY, f"{mib} MB of memory",
              [("AllocationUnits", "byte * 2^20"), ("VirtualQuantity", str(mib))]),
        _item(3, "SCSI controller 0", RT_SCSI, "SCSI controller",
              [("Address", "0"), ("ResourceSubType", "lsilogic")]),
        _item(4, "Hard disk 1", RT_DISK, "Hard disk",
              [("AddressOnParent", "0"), ("HostResource", "ovf:/disk/vmdisk1"), ("Parent", "3")]),
    ]  # fmt: skip
    for n in range(spec.nics):
        items.append(
            _item(5 + n, f"Network adapter {n + 1}", RT_NIC, "E1000 ethernet adapter",
                  [("AddressOnParent", str(7 + n)), ("AutomaticAllocation", "true"),
                   ("Connection", "VM Network"), ("ResourceSubType", "E1000")])
        )  # fmt: skip
    network = (
        "  <NetworkSection>\n    <Info>The networks used</Info>\n"
        '    <Network ovf:name="VM Network">\n      <Description>The VM Network</Description>\n'
        "    </Network>\n  </NetworkSection>\n"
    )
    name = escape(spec.name)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Envelope vmw:buildId="hangar" xmlns="{OVF}" xmlns:cim="http://schemas.dmtf.org/wbem/'
        'wscim/1/common" xmlns:ovf="' + OVF + f'" xmlns:rasd="{RASD}" '
        'xmlns:vmw="http://www.vmware.com/schema/ovf" '
        f'xmlns:vssd="{VSSD}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <References>\n"
        f'    <File ovf:href={quoteattr(spec.disk_file)} ovf:id="file1" '
        f'ovf:size="{spec.disk_file_size}"/>\n'
        "  </References>\n"
        "  <DiskSection>\n    <Info>Virtual disk information</Info>\n"
        f'    <Disk ovf:capacity="{spec.disk_capacity}" ovf:capacityAllocationUnits="byte" '
        f'ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{STREAM_OPTIMIZED}"/>\n'
        "  </DiskSection>\n" + network + f"  <VirtualSystem ovf:id={quoteattr(spec.name)}>\n"
        "    <Info>A virtual machine</Info>\n"
        f"    <Name>{name}</Name>\n"
        '    <OperatingSystemSection ovf:id="101">\n'
        "      <Info>The kind of installed guest operating system</Info>\n"
        "      <Description>Linux 64-Bit</Description>\n"
        "    </OperatingSystemSection>\n"
        "    <VirtualHardwareSection>\n"
        "      <Info>Virtual hardware requirements</Info>\n"
        "      <System>\n"
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
        "        <vssd:InstanceID>0</vssd:InstanceID>\n"
        f"        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n"
        "        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>\n"
        "      </System>\n"
        + "".join(items)
        + "    </VirtualHardwareSection>\n"
        + (
            f"    <AnnotationSection>\n      <Info>Description</Info>\n"
            f"      <Annotation>{escape(spec.description)}</Annotation>\n"
            "    </AnnotationSection>\n"
            if spec.description
            else ""
        )
        + "  </VirtualSystem>\n</Envelope>\n"
    )


def _item(
    instance: int, element: str, kind: int, description: str, fields: list[tuple[str, str]]
) -> str:
    # rasd elements in alphabetical order, as the CIM schema's sequence wants.
    values = [
        *fields,
        ("Description", description),
        ("ElementName", element),
        ("InstanceID", str(instance)),
        ("ResourceType", str(kind)),
    ]
    body = "".join(
        f"        <rasd:{k}>{escape(v)}</rasd:{k}>\n" for k, v in sorted(values, key=lambda x: x[0])
    )
    return f"      <Item>\n{body}      </Item>\n"
