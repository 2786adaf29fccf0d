"""The resolve step: a user's ``VMCreate`` plus host and image facts -> a concrete ``VMConfig``.

Pure: every fact comes in as an argument, nothing is probed or written here.
Checks that need only these facts (names, sizes against the host) happen here
so a bad request is refused before anything is created.
"""

from __future__ import annotations

from collections.abc import Iterable

from hangar.errors import InvalidInput, NextStep, ResourceLimit
from hangar.names import check_name
from hangar.spec.host import HostFacts
from hangar.spec.image import ImageDefaults, ImageManifest
from hangar.spec.network import tap_name
from hangar.spec.units import format_size
from hangar.spec.vm import (
    CloudInit,
    Firmware,
    KernelBoot,
    NicConfig,
    NicCreate,
    PortForward,
    VMConfig,
    VMCreate,
)

# The Debian kernel with a small initramfs needs 96 MB; below that QEMU spins
# silently (shared/MEASUREMENTS.md), so refuse instead.
MIN_MEMORY = 96 * 1024 * 1024
# A VM made to install from an ISO onto a blank disk: enough memory for common installers.
BLANK_DEFAULTS = ImageDefaults(cpus=1, memory=1024 * 1024 * 1024, disk=8 * 1024**3, machine="q35")


def mac_from_id(vm_id: str, index: int) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range, derived from the VM id."""
    digest = int(vm_id[:6], 16) ^ (index * 0x010101)
    octets = [(digest >> shift) & 0xFF for shift in (16, 8, 0)]
    return "52:54:00:" + ":".join(f"{o:02x}" for o in octets)


def resolve(
    request: VMCreate,
    image: ImageManifest | None,
    host: HostFacts,
    *,
    vm_id: str,
    kernel_path: str | None,
    initrd_path: str | None,
) -> VMConfig:
    """Fill defaults from the image (None: a blank disk for an ISO install) and check the
    request against the host.

    Raises :class:`InvalidInput` for bad values and :class:`ResourceLimit` when
    the VM asks for more CPUs or memory than the host has.
    """
    check_name(request.name)
    if image is None and request.iso is None:
        raise InvalidInput(
            "a VM needs an image or an installer ISO",
            hint="name an image, or give an installer ISO and a disk size",
            action=NextStep.LIST_IMAGES,
        )
    defaults = image.defaults if image is not None else BLANK_DEFAULTS
    cpus = request.cpus or defaults.cpus
    memory = request.memory or defaults.memory
    image_size = image.disk_virtual_size if image is not None else 0
    disk = request.disk or max(defaults.disk, image_size)

    if cpus > host.cpus:
        raise ResourceLimit(
            f"{cpus} vCPUs asked for, but the host has {host.cpus} CPUs",
            hint=f"ask for {host.cpus} vCPUs or fewer",
        )
    if memory > host.memory_bytes:
        raise ResourceLimit(
            f"{format_size(memory)} of memory asked for, "
            f"but the host has {format_size(host.memory_bytes)}",
            hint="ask for less memory",
        )
    if memory < MIN_MEMORY:
        raise InvalidInput(
            f"{format_size(memory)} of memory is too little to boot",
            hint=f"use at least {format_size(MIN_MEMORY)}",
        )
    if image is not None and disk < image.disk_virtual_size:
        raise InvalidInput(
            f"disk of {format_size(disk)} is smaller than image '{image.name}' "
            f"({format_size(image.disk_virtual_size)})",
            hint=f"ask for a disk of {format_size(image.disk_virtual_size)} or more",
        )

    firmware = _firmware(request, image, kernel_path)
    graphics = request.graphics if request.graphics is not None else request.iso is not None
    # Firmware, CD-ROMs and VGA need a PC: microvm has no BIOS disk boot, IDE or VGA.
    machine = request.machine or ("q35" if firmware or graphics else defaults.machine)
    if machine == "microvm":
        for wanted, what in ((firmware, "firmware"), (request.iso, "an ISO"),
                             (graphics, "graphics")):  # fmt: skip
            if wanted:
                raise InvalidInput(
                    f"{what} needs a PC machine, and microvm is not one",
                    hint="ask for the q35 machine (or for no machine type: the default fits)",
                )

    # An imported OVF's network adapters set the image's default NIC count.
    nic_requests = request.nics if request.nics is not None else (NicCreate(),) * defaults.nics
    nics = tuple(
        NicConfig(
            type=nic.type,
            mac=nic.mac or mac_from_id(vm_id, i),
            forwards=nic.forwards,
            network=nic.network,
            # The address is allocated by the network service (it needs the
            # addresses in use); here it is only carried through.
            ip=nic.ip,
            tap=tap_name(vm_id, i) if nic.type == "network" else None,
        )
        for i, nic in enumerate(nic_requests)
    )
    _check_forwards(f for nic in nics for f in nic.forwards)

    cloud_init = None
    if image is not None and image.cloud_init:
        cloud_init = CloudInit(
            hostname=request.name,
            user=image.default_user,
            ssh_keys=request.ssh_keys,
            user_data=request.user_data,
        )
    elif request.ssh_keys or request.user_data is not None:
        raise InvalidInput(
            "SSH keys and cloud-init user data need a cloud image"
            + (f"; image '{image.name}' does not use cloud-init" if image else ""),
            hint="launch a cloud image such as debian-12 (the host can build it)",
            details={"image": "debian-12"},
            action=NextStep.BUILD_IMAGE,
        )

    boot = None
    if firmware is None and image is not None and kernel_path is not None:
        boot = KernelBoot(kernel=kernel_path, initrd=initrd_path, cmdline=image.cmdline)
    return VMConfig(
        id=vm_id,
        name=request.name,
        image=image.name if image is not None else "",
        machine=machine,
        cpus=cpus,
        memory=memory,
        disk_size=disk,
        boot=boot,
        nics=nics,
        boot_marker=image.boot_marker if image is not None else "",
        firmware=firmware,
        iso=request.iso.rsplit("/", 1)[-1] if request.iso else None,
        graphics=graphics,
        # Blank disks too: whatever gets installed may run an agent; none answering is harmless.
        agent=image.agent if image is not None else True,
        identity_channel=image.agent if image is not None else True,
        entropy=True,
        cloud_init=cloud_init,
    )


def _firmware(
    request: VMCreate, image: ImageManifest | None, kernel_path: str | None
) -> Firmware | None:
    """The firmware to boot through, or None for direct kernel boot."""
    if request.firmware is None:
        if image is not None and kernel_path is not None and request.iso is None:
            return None
        # No kernel to boot directly: a blank disk, an installer, an imported BIOS disk.
        return "bios"
    if (
        image is not None
        and image.kernel is not None
        and request.iso is None
        and request.firmware not in image.firmware
    ):
        can = " or ".join(image.firmware) or "only direct kernel boot"
        raise InvalidInput(
            f"image '{image.name}' has no bootloader for {request.firmware} on its disk",
            hint=f"it boots with: {can}; ask for no firmware for direct kernel boot",
        )
    return request.firmware


def _check_forwards(forwards: Iterable[PortForward]) -> None:
    seen: set[tuple[str, str, int]] = set()
    for fwd in forwards:
        key = (fwd.protocol, fwd.host_address, fwd.host_port)
        if key in seen:
            raise InvalidInput(
                f"host port {fwd.host_port}/{fwd.protocol} is forwarded twice",
                hint="give each forward its own host port",
            )
        seen.add(key)
