"""Files a VM gets besides its disk: the installer ISO, the cloud-init seed, the UEFI
variable store; and the SSH port forward of a cloud image. Called by VMService.create."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

from hangar.errors import InvalidInput
from hangar.services.qemu.argv import VMFiles
from hangar.services.storage.seed import render_seed, write_seed_iso
from hangar.spec.host import HostFacts
from hangar.spec.vm import PortForward, VMConfig

# ISO 9660: the primary volume descriptor starts at sector 16 with "\x01CD001".
_ISO_MAGIC_OFFSET = 16 * 2048 + 1
_ISO_MAGIC = b"CD001"
SSH_PORT = 22


def check_iso(path: str) -> Path:
    """``path`` if it is a regular file holding an ISO 9660 volume; else InvalidInput."""
    source = Path(path)
    if not source.is_file():
        raise InvalidInput(
            f"no ISO file at {path}", hint="give the ISO's absolute path on the host"
        )
    with source.open("rb") as f:
        f.seek(_ISO_MAGIC_OFFSET)
        if f.read(len(_ISO_MAGIC)) != _ISO_MAGIC:
            raise InvalidInput(
                f"{path} is not an ISO 9660 image (no CD001 volume descriptor)",
                hint="pass an installer .iso file",
            )
    return source


def with_ssh_forward(config: VMConfig, owners: Mapping[tuple[str, int], str]) -> VMConfig:
    """Add a forward 127.0.0.1:<free port> -> 22 to the first NIC unless one forwards 22.

    With user-mode networking the guest's own address is not reachable from the
    host: this forward is how ``hangar shell`` reaches sshd.
    """
    if not config.nics or any(f.guest_port == SSH_PORT for n in config.nics for f in n.forwards):
        return config
    port = _free_port(owners)
    first = config.nics[0]
    forward = PortForward(host_port=port, guest_port=SSH_PORT)
    nics = (first.model_copy(update={"forwards": (*first.forwards, forward)}), *config.nics[1:])
    return config.model_copy(update={"nics": nics})


def _free_port(owners: Mapping[tuple[str, int], str]) -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if ("tcp", port) not in owners:
            return port
    raise InvalidInput(
        "found no free host port for SSH", hint="forward a free host port to guest port 22 yourself"
    )


def prepare(config: VMConfig, files: VMFiles, host: HostFacts, iso: Path | None) -> None:
    """Write the VM's extra files into its (new) folder. Blocking: run in a thread."""
    if iso is not None:
        # A hard link costs nothing and survives the user deleting their file;
        # across filesystems, a copy. (No chmod: a link shares the user's inode.)
        try:
            os.link(iso, files.iso)
        except OSError:
            shutil.copyfile(iso, files.iso)
    if config.cloud_init is not None:
        macs = [nic.mac for nic in config.nics]
        write_seed_iso(render_seed(config.cloud_init, config.id, macs), files.seed)
    if config.firmware == "uefi":
        if host.ovmf_vars is None:
            raise InvalidInput(
                "UEFI needs OVMF, and this host has none",
                hint="install the 'ovmf' package (the README's setup does)",
            )
        shutil.copyfile(host.ovmf_vars, files.efivars)
