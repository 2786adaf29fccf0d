"""The resolve step: a user's ``VMCreate`` plus host and image facts -> a concrete ``VMConfig``.

Pure: every fact comes in as an argument, nothing is probed or written here.
Checks that need only these facts (names, sizes against the host) happen here
so a bad request is refused before anything is created.
"""

from __future__ import annotations

from collections.abc import Iterable

from hangar.errors import InvalidInput, ResourceLimit
from hangar.host.facts import HostFacts
from hangar.spec.image import ImageManifest
from hangar.spec.network import tap_name
from hangar.spec.units import format_size
from hangar.spec.vm import (
    KernelBoot,
    NicConfig,
    NicCreate,
    PortForward,
    VMConfig,
    VMCreate,
    check_name,
)

# The Debian kernel with a small initramfs needs 96 MB; below that QEMU spins
# silently (shared/MEASUREMENTS.md), so refuse instead.
MIN_MEMORY = 96 * 1024 * 1024


def mac_from_id(vm_id: str, index: int) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range, derived from the VM id."""
    digest = int(vm_id[:6], 16) ^ (index * 0x010101)
    octets = [(digest >> shift) & 0xFF for shift in (16, 8, 0)]
    return "52:54:00:" + ":".join(f"{o:02x}" for o in octets)


def resolve(
    request: VMCreate,
    image: ImageManifest,
    host: HostFacts,
    *,
    vm_id: str,
    kernel_path: str,
    initrd_path: str | None,
) -> VMConfig:
    """Fill defaults from the image and check the request against the host.

    Raises :class:`InvalidInput` for bad values and :class:`ResourceLimit` when
    the VM asks for more CPUs or memory than the host has.
    """
    check_name(request.name)
    cpus = request.cpus or image.defaults.cpus
    memory = request.memory or image.defaults.memory
    disk = request.disk or max(image.defaults.disk, image.disk_virtual_size)

    if cpus > host.cpus:
        raise ResourceLimit(
            f"{cpus} vCPUs asked for, but the host has {host.cpus} CPUs",
            hint=f"use --cpus {host.cpus} or fewer",
        )
    if memory > host.memory_bytes:
        raise ResourceLimit(
            f"{format_size(memory)} of memory asked for, "
            f"but the host has {format_size(host.memory_bytes)}",
            hint="ask for less memory with --memory",
        )
    if memory < MIN_MEMORY:
        raise InvalidInput(
            f"{format_size(memory)} of memory is too little to boot",
            hint=f"use at least {format_size(MIN_MEMORY)}",
        )
    if disk < image.disk_virtual_size:
        raise InvalidInput(
            f"disk of {format_size(disk)} is smaller than image '{image.name}' "
            f"({format_size(image.disk_virtual_size)})",
            hint=f"use --disk {format_size(image.disk_virtual_size)} or more",
        )

    # An imported OVF's network adapters set the image's default NIC count.
    nic_requests = (
        request.nics if request.nics is not None else (NicCreate(),) * image.defaults.nics
    )
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

    return VMConfig(
        id=vm_id,
        name=request.name,
        image=image.name,
        machine=request.machine or image.defaults.machine,
        cpus=cpus,
        memory=memory,
        disk_size=disk,
        boot=KernelBoot(kernel=kernel_path, initrd=initrd_path, cmdline=image.cmdline),
        nics=nics,
        boot_marker=image.boot_marker,
    )


def _check_forwards(forwards: Iterable[PortForward]) -> None:
    seen: set[tuple[str, str, int]] = set()
    for fwd in forwards:
        key = (fwd.protocol, fwd.host_address, fwd.host_port)
        if key in seen:
            raise InvalidInput(
                f"host port {fwd.host_port}/{fwd.protocol} is forwarded twice",
                hint="give each --forward its own host port",
            )
        seen.add(key)
