"""Volume and NIC hotplug over QMP on q35: blockdev-add / netdev_add + device_add into a
PCIe root port, and back.

Unplugging needs the guest's cooperation: ``device_del`` asks it to release
the device, and the block nodes (or the tap) can only go once it has. QEMU says so
with a DEVICE_DELETED event carrying the device's id; it sends it when the device
object is finalized, after its properties (the drive, the netdev) were released.
"""

from __future__ import annotations

import contextlib

from hangar.errors import Conflict, QemuFailed
from hangar.services.qemu.argv import data_disk_device, data_disk_node, nic_device, nic_netdev
from hangar.services.qmp.monitor import Monitor
from hangar.spec.vm import DataDisk, NicConfig, VMConfig

UNPLUG_TIMEOUT = 20.0


async def plug(monitor: Monitor, config: VMConfig, disk: DataDisk) -> None:
    """Open the volume's file and format nodes, then add its virtio-blk-pci device."""
    node = data_disk_node(disk)
    # Passed as a descriptor: a sandboxed QEMU cannot open the pool's file itself.
    async with monitor.file_for_qemu(disk.path) as filename:
        await monitor.execute(
            "blockdev-add",
            {
                "driver": "file",
                "filename": filename,
                "node-name": f"{node}-file",
                "discard": "unmap",
            },
        )
    try:
        await monitor.execute(
            "blockdev-add",
            {"driver": disk.format, "file": f"{node}-file", "node-name": node, "discard": "unmap"},
        )
        try:
            await monitor.execute("device_add", data_disk_device(config, disk))
        except QemuFailed:
            await monitor.execute("blockdev-del", {"node-name": node})
            raise
    except QemuFailed:
        with contextlib.suppress(QemuFailed):
            await monitor.execute("blockdev-del", {"node-name": f"{node}-file"})
        raise


async def unplug(monitor: Monitor, disk: DataDisk) -> None:
    """Ask the guest to release the device, wait until it has, then close the nodes."""
    node = data_disk_node(disk)
    if not await _device_del(monitor, node):
        raise Conflict(
            f"the guest did not release volume device {node} in {UNPLUG_TIMEOUT:g} s",
            hint="the volume stays attached; unmount it in the guest and try again, "
            "or stop the VM and detach it then",
        )
    await monitor.execute("blockdev-del", {"node-name": node})
    await monitor.execute("blockdev-del", {"node-name": f"{node}-file"})


async def _device_del(monitor: Monitor, device: str) -> bool:
    """``device_del``, then wait for QEMU's DEVICE_DELETED of ``device``; False if the
    guest did not let go in UNPLUG_TIMEOUT (the device stays, the request pending).

    Only the device's own event names it: a virtio-pci device's backend child is
    deleted first, with a path and no ``device``.
    """
    async with monitor.expect("DEVICE_DELETED", lambda data: data.get("device") == device) as gone:
        await monitor.execute("device_del", {"id": device})
        return await gone.get(UNPLUG_TIMEOUT) is not None


async def plug_nic(monitor: Monitor, config: VMConfig, index: int, nic: NicConfig) -> None:
    """Open the NIC's tap (netdev_add), then add its virtio-net-pci into its root port."""
    netdev = nic_netdev(config, index, nic)
    await monitor.execute("netdev_add", netdev)
    try:
        await monitor.execute("device_add", nic_device(config, index, nic))
    except QemuFailed:
        with contextlib.suppress(QemuFailed):
            await monitor.execute("netdev_del", {"id": netdev["id"]})
        raise


async def unplug_nic(monitor: Monitor, config: VMConfig, index: int, nic: NicConfig) -> None:
    """Ask the guest to release the NIC, wait until the device is gone, close the tap."""
    device = nic_device(config, index, nic)
    if not await _device_del(monitor, device["id"]):
        raise Conflict(
            f"the guest did not release NIC {device['id']} in {UNPLUG_TIMEOUT:g} s",
            hint="the NIC stays attached; stop the VM and detach it then",
        )
    await monitor.execute("netdev_del", {"id": device["netdev"]})
