"""What a user asks for when creating a VM, and the fully resolved config hangar runs.

``VMCreate`` is the user's intent: strict (unknown fields are errors), immutable,
with most fields optional. ``VMConfig`` is the result of the resolve step
(:mod:`hangar.spec.resolve`): every value concrete, stored in the database and
rendered to a QEMU command line.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hangar.errors import InvalidInput
from hangar.names import MAX_NAME, NAME_PATTERN
from hangar.spec.forwards import HINT, parse_forward
from hangar.spec.units import parse_size

CONFIG_FORMAT_VERSION = 1
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# One OpenSSH public key line: type, base64 blob, optional comment.
_SSH_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)"
    r" [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?$"
)
MAX_USER_DATA = 64 * 1024
Firmware = Literal["bios", "uefi"]


def _size(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_size(value)
        except InvalidInput as exc:
            # pydantic turns only ValueError into a validation error.
            raise ValueError(f"{exc.message}; {exc.hint}") from exc
    return value


# Field before the validator: else pydantic writes a bare "gt" into the JSON schema.
Size = Annotated[int, Field(gt=0), BeforeValidator(_size)]


class PortForward(BaseModel):
    """Forward a host port on ``host_address`` to a port of the guest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host_port: int = Field(ge=1, le=65535)
    guest_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    # Loopback only by default: a VM's services are not exposed to the network
    # unless the user asks for it.
    host_address: str = "127.0.0.1"

    @field_validator("host_address")
    @classmethod
    def _ipv4_literal(cls, value: str) -> str:
        # It is spliced into QEMU's option string (-netdev user,hostfwd=...) and an HMP
        # command (hostfwd_add): anything but a dotted IPv4 literal could add options
        # such as ",guestfwd=...-cmd:..." (a shell). slirp forwards IPv4 only.
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(
                f"host address '{value}' is not an IPv4 address such as 127.0.0.1"
            ) from None
        return str(address)

    @classmethod
    def parse(cls, text: str) -> PortForward:
        """Parse ``[HOST_IP:]HOSTPORT:GUESTPORT[/tcp|udp]`` as the CLI's --forward takes it."""
        values = parse_forward(text)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InvalidInput(f"port forward '{text}' is out of range", hint=HINT) from exc


class NicCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # "user": QEMU user-mode networking (slirp, unprivileged). "network": a tap
    # on one of hangar's virtual networks (``network`` names it).
    type: Literal["user", "network"] = "user"
    mac: str | None = None
    forwards: tuple[PortForward, ...] = ()
    network: str | None = None
    # A fixed address on a managed network; the lowest free one when unset.
    ip: str | None = None

    @model_validator(mode="after")
    def _network_fields(self) -> NicCreate:
        if self.type == "network":
            if not self.network:
                raise ValueError("a NIC of type 'network' needs 'network' (its name)")
            if self.forwards:
                raise ValueError("forwards on a network NIC are added to its network, not here")
        elif self.network is not None or self.ip is not None:
            raise ValueError("'network' and 'ip' need type 'network'")
        return self

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is not None and not _MAC.match(value.lower()):
            raise ValueError("mac must look like 52:54:00:12:34:56")
        return value.lower() if value else value


def check_ssh_key(key: str) -> str:
    """One OpenSSH public key line (``ssh-ed25519 AAAA... comment``), stripped."""
    key = key.strip()
    if len(key) > 16384 or not _SSH_KEY.match(key):
        raise ValueError(
            "ssh_keys must be OpenSSH public key lines, e.g. 'ssh-ed25519 AAAA... me@host'"
        )
    return key


class VMCreate(BaseModel):
    """A request to create a VM. Unset fields are filled by the resolve step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The schema states the rule; check_name enforces it with a clearer message.
    name: str = Field(
        json_schema_extra={"pattern": NAME_PATTERN, "minLength": 1, "maxLength": MAX_NAME}
    )
    # None only with ``iso``: a blank disk of ``disk`` bytes to install onto.
    image: str | None = None
    cpus: int | None = Field(default=None, ge=1, le=255)
    memory: Size | None = None
    disk: Size | None = None
    nics: tuple[NicCreate, ...] | None = None
    # q35 when volumes must be attached while the VM runs (hotplug), or to boot firmware.
    machine: Literal["microvm", "q35"] | None = None
    # Boot from the disk through firmware instead of direct kernel boot.
    firmware: Firmware | None = None
    # An installer ISO on hangard's host (absolute path), attached as a CD-ROM.
    iso: str | None = Field(default=None, min_length=1, max_length=4096)
    # A VGA display, served by QEMU's VNC (screenshots, graphical console). Default: with iso.
    graphics: bool | None = None
    # cloud-init (images that use it): keys for the default user, user-data passed through.
    ssh_keys: tuple[str, ...] = Field(default=(), max_length=32)
    user_data: str | None = Field(default=None, max_length=MAX_USER_DATA)

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_ssh_key(k) for k in value)

    @field_validator("iso")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "," in value):
            # QEMU's option syntax splits on commas; relative paths mean nothing to hangard.
            raise ValueError("iso must be an absolute path on hangard's host, without commas")
        return value


class NicConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["user", "network"]
    mac: str
    forwards: tuple[PortForward, ...]
    # Network NICs only (defaults keep configs stored before networks valid).
    network: str | None = None
    ip: str | None = None
    tap: str | None = None
    # q35: the PCIe root port of a NIC attached while the VM ran (None: its position).
    slot: int | None = None
    # User-mode networking. ``address``: the IPv4 address the guest leases and port
    # forwards go to (None: slirp's first, 10.0.2.15). ``dhcp_start``: for a VM resumed
    # from a saved guest (warm launch), the base of the saved DHCP lease table, chosen
    # so that the guest's new MAC leases ``address`` (services/templates/warm.py).
    address: str | None = None
    dhcp_start: str | None = None


class KernelBoot(BaseModel):
    """Direct kernel boot: the image's uncompressed vmlinux through its PVH entry point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kernel"] = "kernel"
    kernel: str
    initrd: str | None
    cmdline: str


class CloudInit(BaseModel):
    """What the VM's NoCloud seed says (rendered by services/storage/seed.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hostname: str
    user: str
    ssh_keys: tuple[str, ...] = ()
    # Passed through untouched when given; else hangar writes a minimal #cloud-config.
    user_data: str | None = None


class DataDisk(BaseModel):
    """A volume attached to a VM, after its root disk (vdb, vdc, ... in the guest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume: str  # the volume's id: QEMU node names and the guest's disk serial derive from it
    path: str
    format: Literal["qcow2", "raw"]
    # q35: the PCIe root port (hp<slot>) the volume is plugged into.
    slot: int = 0


class VMConfig(BaseModel):
    """A VM as hangar runs it: everything resolved, nothing left to guess."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = CONFIG_FORMAT_VERSION
    id: str
    name: str
    image: str
    # microvm (virtio-mmio, fastest boot) or q35 (PCIe: volume hotplug).
    machine: Literal["microvm", "q35"]
    cpus: int
    memory: int
    disk_size: int
    # None: the VM boots from its disk (or CD-ROM) through ``firmware``.
    boot: KernelBoot | None
    nics: tuple[NicConfig, ...]
    boot_marker: str
    # Volumes attached (storage issue); rendered after the root disk.
    data_disks: tuple[DataDisk, ...] = ()
    # Set: boot through SeaBIOS or OVMF (q35) from the disk, not the image's kernel.
    firmware: Firmware | None = None
    # The installer ISO's original file name while one is attached (its copy is
    # VMFiles.iso); None once detached.
    iso: str | None = None
    graphics: bool = False
    # A virtio-serial channel to qemu-guest-agent.
    agent: bool = False
    # hangar's own virtio-serial port next to the agent's: a warm template's identity
    # script waits on it (services/templates/identity.py). False for VMs made before
    # it existed, whose saved guests must keep loading into the same devices.
    identity_channel: bool = False
    # A virtio-rng device (fed from the host's /dev/urandom) and, on q35, QEMU's
    # vmgenid: see argv._entropy_args. False for VMs made before they existed, whose
    # saved guests must keep loading into the same devices.
    entropy: bool = False
    cloud_init: CloudInit | None = None


def vm_uuid(vm_id: str) -> str:
    """The VM's UUID (given to QEMU with -uuid) in its canonical dashed form."""
    h = vm_id.ljust(32, "0")[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
