"""VM config -> QEMU command line. Pure and deterministic: golden-file tested.

Every host fact arrives as an argument (``HostFacts``, ``VMFiles``); nothing here
looks at the host. The order of arguments is stable so golden files stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.host.accel import accel_args
from hangar.spec.host import HostFacts
from hangar.spec.vm import DataDisk, NicConfig, PortForward, VMConfig, vm_uuid


@dataclass(frozen=True)
class VMFiles:
    """Where one VM's files live. Sockets sit in the short runtime folder (108-byte limit)."""

    dir: Path
    runtime: Path
    # The disk file now, once snapshots have put overlays on root.qcow2 (layers.py).
    active_disk: Path | None = None

    @property
    def disk(self) -> Path:
        return self.active_disk or self.dir / "root.qcow2"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own stdout and stderr: where its error messages go."""
        return self.dir / "qemu.log"

    @property
    def exit_status(self) -> Path:
        """Written by the supervising shell when QEMU exits: its exit status."""
        return self.dir / "exit-status"

    @property
    def snapshots(self) -> Path:
        """One folder per snapshot: its frozen disk layer, saved memory, kept files."""
        return self.dir / "snapshots"

    @property
    def pidfile(self) -> Path:
        return self.runtime / "qemu.pid"

    @property
    def qmp_socket(self) -> Path:
        return self.runtime / "qmp.sock"

    @property
    def console_socket(self) -> Path:
        return self.runtime / "console.sock"

    @property
    def agent_socket(self) -> Path:
        """qemu-guest-agent's virtio-serial channel."""
        return self.runtime / "qga.sock"

    @property
    def identity_socket(self) -> Path:
        """hangar's own virtio-serial port (VMConfig.identity_channel)."""
        return self.runtime / "identity.sock"

    @property
    def vnc_socket(self) -> Path:
        """QEMU's VNC server: reachable only through hangard's authorised proxy (0600)."""
        return self.runtime / "vnc.sock"

    @property
    def efivars(self) -> Path:
        """The VM's own UEFI variable store (a copy of OVMF's template)."""
        return self.dir / "efivars.fd"

    @property
    def iso(self) -> Path:
        """The attached installer ISO (a hard link or copy of the user's file)."""
        return self.dir / "install.iso"

    @property
    def seed(self) -> Path:
        """The cloud-init NoCloud seed (an ISO labelled 'cidata')."""
        return self.dir / "seed.iso"


def kernel_cmdline(config: VMConfig, host: HostFacts) -> str:
    """The guest kernel's command line: hangar's flags, then the image's own."""
    args = ["console=ttyS0", "panic=-1"]
    if host.tsc_khz:
        # microvm has no HPET: under host load the guest's TSC calibration can
        # fail and the boot hangs at 0.000000 (shared/MEASUREMENTS.md).
        args.append(f"tsc_early_khz={host.tsc_khz}")
    if config.machine == "q35":
        # Many guests booting at once on a PC: "IO-APIC + timer doesn't work!" panics
        # under load (shared/MEASUREMENTS.md).
        args.append("no_timer_check")
    args.append(f"hangar.name={config.name}")
    if config.boot is not None and config.boot.cmdline:
        args.append(config.boot.cmdline)
    return " ".join(args)


def nic_slot(index: int, nic: NicConfig) -> int:
    """The NIC's slot: its PCIe root port on q35, and its QEMU ids on q35.

    A NIC attached while the VM runs keeps the slot it was plugged into; NICs
    from launch use their position.
    """
    return nic.slot if nic.slot is not None else index


def nic_netdev(config: VMConfig, index: int, nic: NicConfig) -> dict[str, str]:
    """The -netdev / QMP netdev_add properties of a network (tap) NIC."""
    ident = nic_slot(index, nic) if config.machine == "q35" else index
    # hangard made the tap (and put it on the network's bridge) before QEMU
    # opens it: QEMU runs no scripts. No vhost: this host's kernel has no
    # vhost-net (shared/MEASUREMENTS.md).
    return {
        "type": "tap",
        "id": f"net{ident}",
        "ifname": str(nic.tap),
        "script": "no",
        "downscript": "no",
    }


def nic_device(config: VMConfig, index: int, nic: NicConfig) -> dict[str, str]:
    """The -device / QMP device_add properties of a NIC."""
    if config.machine != "q35":
        return {"driver": virtio(config, "net"), "netdev": f"net{index}", "mac": nic.mac}
    slot = nic_slot(index, nic)
    return {
        "driver": virtio(config, "net"),
        "netdev": f"net{slot}",
        "mac": nic.mac,
        "id": f"nic{slot}",
        "bus": nic_port(slot),
    }


@dataclass(frozen=True)
class RamFile:
    """Guest RAM backed by a file: a warm template's saved RAM (services/templates/ram.py).

    ``shared``: written through to the file (only while a template is made);
    otherwise the file is mapped private, copy-on-write: the guest starts with its
    content, reads it lazily, never changes it, and VMs launched from one template
    share the pages none of them wrote.
    """

    path: Path
    shared: bool
    # Opened read-only (QEMU 8.2's readonly=on,rom=off): the file may be one many
    # VMs' QEMUs map, none of which may write it.
    read_only: bool = False


# The id of each machine's RAM backend when QEMU makes it itself: a saved stream
# names its RAM block by it, so a file backend must take the same id.
RAM_IDS = {"microvm": "microvm.ram", "q35": "pc.ram"}


def _ram_args(config: VMConfig, ram: RamFile) -> list[str]:
    return [
        "-object",
        f"memory-backend-file,id={RAM_IDS[config.machine]},size={config.memory},"
        f"mem-path={ram.path},share={'on' if ram.shared else 'off'}"
        + (",readonly=on,rom=off" if ram.read_only else ""),
    ]


def nic_port(slot: int) -> str:
    return f"np{slot}"


def _props(props: dict[str, str], first: str) -> str:
    rest = {k: v for k, v in props.items() if k != first}
    return ",".join([props[first], *(f"{k}={v}" for k, v in rest.items())])


def hostfwd_rule(nic: NicConfig, fwd: PortForward) -> str:
    """A user-mode NIC's forward as slirp spells it (-netdev user,hostfwd=RULE and
    HMP hostfwd_add): PROTO:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT."""
    return f"{fwd.protocol}:{fwd.host_address}:{fwd.host_port}-{nic.address or ''}:{fwd.guest_port}"


def _nic_args(
    config: VMConfig, index: int, nic: NicConfig, incoming: bool, detached: bool
) -> list[str]:
    device = _props(nic_device(config, index, nic), "driver")
    netdev_id = nic_device(config, index, nic)["netdev"]
    if nic.type == "network":
        if detached:
            # A hub port of its own: the same device (and no netdev state to save),
            # without the VM's tap, which the running VM holds.
            return ["-netdev", f"hubport,id={netdev_id},hubid={index}", "-device", device]
        return ["-netdev", _props(nic_netdev(config, index, nic), "type"), "-device", device]
    if detached:
        nic = nic.model_copy(update={"forwards": ()})  # their host ports are the VM's
    netdev = [f"user,id={netdev_id}"]
    # A fresh lease table gives the guest its first address (dhcpstart); a resumed
    # one already holds leases, counted from the saved table's own base.
    start = (nic.dhcp_start or nic.address) if incoming else nic.address
    if start:
        netdev.append(f"dhcpstart={start}")
    netdev += [f"hostfwd={hostfwd_rule(nic, fwd)}" for fwd in nic.forwards]
    return ["-netdev", ",".join(netdev), "-device", device]


# q35 only: PCIe root ports that volumes are plugged into, cold or hot
# (one device per port; microvm's virtio-mmio has no hotplug at all).
HOTPLUG_PORTS = 4
# q35 only: root ports for NICs, so any NIC can be unplugged and others plugged
# while the VM runs. Also the most NICs a q35 VM has.
NIC_PORTS = 8
_MACHINES = {
    "microvm": "microvm,x-option-roms=off,rtc=on,acpi=on,isa-serial=on",
    "q35": "q35",
}


def virtio(config: VMConfig, kind: str) -> str:
    """The virtio device model for ``kind`` ('blk', 'net') on the VM's machine."""
    return f"virtio-{kind}-pci" if config.machine == "q35" else f"virtio-{kind}-device"


def hotplug_port(slot: int) -> str:
    return f"hp{slot}"


def data_disk_node(disk: DataDisk) -> str:
    """The QEMU node name of an attached volume (also used by hotplug over QMP)."""
    return f"vol-{disk.volume[:12]}"


def data_disk_device(config: VMConfig, disk: DataDisk) -> dict[str, str]:
    """The -device / QMP device_add properties of an attached volume."""
    node = data_disk_node(disk)
    props = {"driver": virtio(config, "blk"), "id": node, "drive": node}
    if config.machine == "q35":
        props["bus"] = hotplug_port(disk.slot)
    props["serial"] = disk.volume[:20]
    return props


def _data_disk_args(config: VMConfig, disk: DataDisk) -> list[str]:
    node = data_disk_node(disk)
    props = data_disk_device(config, disk)
    device = ",".join([props.pop("driver"), *(f"{k}={v}" for k, v in props.items())])
    if config.machine == "microvm":
        # Kept as before the q35 option (golden files): no id on microvm.
        device = device.replace(f",id={node}", "")
    return [
        "-blockdev",
        f"driver=file,filename={disk.path},node-name={node}-file,discard=unmap",
        "-blockdev",
        f"driver={disk.format},file={node}-file,node-name={node},discard=unmap",
        "-device",
        device,
    ]


def _boot_args(config: VMConfig, host: HostFacts, files: VMFiles) -> list[str]:
    """Direct kernel boot, or the firmware that boots the disk (SeaBIOS is q35's default)."""
    if config.boot is not None:
        argv = ["-kernel", config.boot.kernel]
        if config.boot.initrd:
            argv += ["-initrd", config.boot.initrd]
        return [*argv, "-append", kernel_cmdline(config, host)]
    if config.firmware == "uefi":
        if host.ovmf_code is None:
            raise InvalidInput(
                "UEFI needs OVMF, and this host has none",
                hint="install the 'ovmf' package (the README's setup does)",
            )
        # Code read-only and shared; the variable store is the VM's own copy.
        return [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={host.ovmf_code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={files.efivars}",
        ]
    return []


def _cdrom_args(files: VMFiles) -> list[str]:
    # Raw and read-only, never probed: an ISO is whatever bytes the user gave.
    return [
        "-blockdev",
        f"driver=file,filename={files.iso},node-name=cd-file,read-only=on",
        "-blockdev",
        "driver=raw,file=cd-file,node-name=cd,read-only=on",
        # After the disk in boot order: a blank disk falls through to the installer,
        # an installed one boots by itself.
        "-device",
        "ide-cd,drive=cd,bus=ide.0,bootindex=2",
    ]


def _seed_args(config: VMConfig, files: VMFiles) -> list[str]:
    # A read-only virtio disk (microvm has no IDE): cloud-init finds it by its label.
    return [
        "-blockdev",
        f"driver=file,filename={files.seed},node-name=seed-file,read-only=on",
        "-blockdev",
        "driver=raw,file=seed-file,node-name=seed,read-only=on",
        "-device",
        f"{virtio(config, 'blk')},drive=seed,serial=cidata",
    ]


IDENTITY_PORT = "org.hangar.identity.0"


def _agent_args(config: VMConfig, files: VMFiles) -> list[str]:
    argv = [
        "-chardev",
        f"socket,id=qga,path={files.agent_socket},server=on,wait=off",
        "-device",
        f"{virtio(config, 'serial')},id=vser",
        "-device",
        "virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0",
    ]
    if config.identity_channel:
        argv += [
            "-chardev",
            f"socket,id=hangar-id,path={files.identity_socket},server=on,wait=off",
            "-device",
            f"virtserialport,bus=vser.0,chardev=hangar-id,name={IDENTITY_PORT}",
        ]
    return argv


def _entropy_args(config: VMConfig) -> list[str]:
    """Randomness that is the VM's own, so clones of one saved guest do not share it.

    virtio-rng: the guest kernel's hw_random core mixes host randomness into its pool
    (at boot and at each of its reseeds). vmgenid: QEMU gives each process it starts a
    fresh generation id (guid=auto); when a saved guest is loaded (warm launch, fork,
    memory-snapshot restore all start a new QEMU with -incoming), QEMU writes the new
    id into guest memory and raises the ACPI notify, and Linux >= 5.18 (CONFIG_VMGENID)
    reseeds its CRNG at once. No QMP step is needed, nor possible: QEMU 7.2 refuses
    ``qom-set guid`` on a realized vmgenid device.

    vmgenid is q35 only: QEMU's microvm ACPI tables (hw/i386/acpi-microvm.c, 7.2)
    carry no vmgenid SSDT and its GED cannot deliver the change notify, so a microvm
    guest would never see the device. microvm guests get virtio-rng alone: their CRNG
    diverges at its next scheduled reseed, not at once.
    """
    if not config.entropy:
        return []
    argv = [
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        f"{virtio(config, 'rng')},rng=rng0",
    ]
    if config.machine == "q35":
        argv += ["-device", "vmgenid,id=vmgenid0,guid=auto"]
    return argv


def _qmp_args(files: VMFiles, qmp_fd: int | None) -> list[str]:
    if qmp_fd is None:
        return ["-qmp", f"unix:{files.qmp_socket},server=on,wait=off"]
    # A socket chardev on an inherited socket that is bound and listening already
    # (fd=N with server=on, QEMU >= 5.1: "char: allow passing pre-opened socket file
    # descriptor at startup"). hangard connects before QEMU even runs: the kernel
    # queues the connection until QEMU accepts, so nobody waits for QEMU to create a
    # socket file (libvirt starts QEMU the same way).
    return [
        "-chardev",
        f"socket,id=qmp,fd={qmp_fd},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]


def render_argv(
    config: VMConfig,
    host: HostFacts,
    files: VMFiles,
    *,
    incoming: bool = False,
    ram: RamFile | None = None,
    detached_nics: bool = False,
    qmp_fd: int | None = None,
) -> list[str]:
    """The full QEMU argv for ``config``. QEMU starts paused (-S) and is continued over QMP.

    ``incoming``: QEMU waits for a saved migration stream (``migrate-incoming`` over
    QMP) instead of booting; the stream only loads into the same machine and devices,
    so everything else must be rendered from the config it was saved with.
    ``ram``: guest RAM in that file instead of anonymous memory. ``detached_nics``:
    the same NIC devices on backends of their own (no taps, no port forwards), for a
    QEMU that only converts a saved guest while the VM itself runs.
    ``qmp_fd``: the number, in QEMU, of a unix socket hangard bound and listens on
    for QEMU's QMP (process.QmpSockets); None: QEMU makes the socket at
    ``files.qmp_socket`` itself (the benchmarks' plain QEMU, which polls for it).
    """
    machine = _MACHINES[config.machine]
    if ram is not None:
        machine += f",memory-backend={RAM_IDS[config.machine]}"
    argv = [
        host.qemu_binary,
        "-name",
        f"{config.name},debug-threads=on",
        "-uuid",
        vm_uuid(config.id),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        # A guest reboot or panic makes QEMU exit; hangard sees why over QMP
        # and decides what to do, instead of a guest spinning at 100 % CPU.
        "-no-reboot",
        "-S",
        *accel_args(host, config.cpus, memory=config.memory),
        "-machine",
        machine,
        "-smp",
        str(config.cpus),
        "-m",
        f"{config.memory // (1024 * 1024)}M",
        *(_ram_args(config, ram) if ram is not None else []),
        *_boot_args(config, host, files),
        # Explicit formats at every level: QEMU never probes an image.
        "-blockdev",
        f"driver=file,filename={files.disk},node-name=root-file,discard=unmap",
        "-blockdev",
        "driver=qcow2,file=root-file,node-name=root,discard=unmap",
        "-device",
        f"{virtio(config, 'blk')},drive=root" + (",bootindex=1" if config.firmware else ""),
    ]
    if config.iso is not None:
        argv += _cdrom_args(files)
    if config.machine == "q35":
        for slot in range(HOTPLUG_PORTS):
            argv += ["-device", f"pcie-root-port,id={hotplug_port(slot)},chassis={slot + 1}"]
        for slot in range(NIC_PORTS):
            chassis = HOTPLUG_PORTS + 1 + slot
            argv += ["-device", f"pcie-root-port,id={nic_port(slot)},chassis={chassis}"]
    for disk in config.data_disks:
        argv += _data_disk_args(config, disk)
    if config.cloud_init is not None:
        argv += _seed_args(config, files)
    for index, nic in enumerate(config.nics):
        argv += _nic_args(config, index, nic, incoming, detached_nics)
    argv += [
        "-chardev",
        f"socket,id=console,path={files.console_socket},server=on,wait=off,"
        f"logfile={files.serial_log},logappend=on",
        "-serial",
        "chardev:console",
    ]
    if config.agent:
        argv += _agent_args(config, files)
    # After every older device: on microvm, virtio-mmio slots go in device order.
    argv += _entropy_args(config)
    if config.graphics:
        # VGA for the guest; its screen only on a unix socket that hangard proxies.
        argv += ["-device", "VGA", "-vnc", f"unix:{files.vnc_socket}"]
    argv += _qmp_args(files, qmp_fd)
    argv += [
        "-pidfile",
        str(files.pidfile),
    ]
    if incoming:
        argv += ["-incoming", "defer"]
    return argv
