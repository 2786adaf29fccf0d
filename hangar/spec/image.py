"""The image manifest (``image.json``): what an installed image holds and how it boots."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hangar.errors import InvalidInput
from hangar.names import check_member, check_name
from hangar.spec.vm import VMConfig

IMAGE_FORMAT_VERSION = 1
# The most standby VMs a warm template keeps (services/templates/standby.py).
MAX_STANDBY = 8


class ImageDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: int = 1
    memory: int = 256 * 1024 * 1024
    disk: int = 1024 * 1024 * 1024
    # NICs the image's VMs get by default (an imported OVF's network adapters).
    nics: int = 1
    # A template published from a q35 VM launches q35 VMs (volume hotplug).
    machine: Literal["microvm", "q35"] = "microvm"


class WarmState(BaseModel):
    """A running guest saved with a template (``publish --warm``): a launch resumes it
    instead of booting, then gives it a new identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The migration stream's file name in the image folder: RAM and devices, or
    # devices alone when ``ram`` names the RAM file (services/templates/ram.py).
    memory: str
    ram: str | None = None
    # The guest pid of hangar's identity script, saved waiting for its input (agent
    # images; services/templates/identity.py). None: the agent starts it.
    listener: int | None = None
    # The config of the VM it was saved from: a stream only loads into the same
    # machine and devices, so launches render their QEMU command line from it.
    config: VMConfig
    # Standby VMs hangard keeps resumed and ready for launches to claim (standby.py).
    standby: int = Field(default=0, ge=0, le=MAX_STANDBY)

    @field_validator("memory", "ram")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else _plain_file(value)


class ImageManifest(BaseModel):
    """What ``image.json`` says. Paths are file names inside the image folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = IMAGE_FORMAT_VERSION
    name: str
    recipe_hash: str
    created_at: str
    # None: a disk for BIOS boot (imported disks that are not an ext4 root
    # filesystem); hangar cannot launch those yet.
    kernel: str | None = None
    initrd: str | None = None
    # Guest-specific kernel arguments; hangar adds console, panic and timer flags.
    cmdline: str = ""
    disk: str
    disk_format: Literal["qcow2"] = "qcow2"
    disk_virtual_size: int
    boot_marker: str = ""
    defaults: ImageDefaults = Field(default_factory=ImageDefaults)
    description: str = ""
    # Where the image came from: "recipe", "import", "publish".
    origin: Literal["recipe", "import", "publish"] = "recipe"
    warm: WarmState | None = None
    # Firmware the disk boots with on its own (it holds a bootloader); empty: kernel boot only.
    firmware: tuple[Literal["bios", "uefi"], ...] = ()
    # A cloud image: each VM gets a NoCloud seed (hostname, default_user with the keys).
    cloud_init: bool = False
    default_user: str = ""
    # The guest runs qemu-guest-agent: VMs get its virtio-serial channel.
    agent: bool = False
    # The project a template belongs to (a fork's): only that project lists and
    # launches it. None: shared with every project (what the host administrator
    # builds, imports or publishes, or shares with 'hangar image share').
    project: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_name(value, what="image name")
        except InvalidInput as exc:
            raise ValueError(f"{exc.message}; {exc.hint}") from exc

    @field_validator("kernel", "initrd", "disk")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else _plain_file(value)

    def files(self) -> tuple[str, ...]:
        """The files of its folder that it names."""
        named = (self.kernel, self.initrd, self.disk)
        warm = (self.warm.memory, self.warm.ram) if self.warm else ()
        return tuple(f for f in (*named, *warm) if f is not None)

    def visible_to(self, project: str | None) -> bool:
        """Whether a caller of ``project`` (None: the host administrator) may use it."""
        return project is None or self.project is None or self.project == project


def _plain_file(value: str) -> str:
    try:
        return check_member(value)
    except InvalidInput as exc:
        raise ValueError(f"{exc.message}; {exc.hint}") from exc
