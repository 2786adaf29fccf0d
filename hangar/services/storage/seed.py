"""cloud-init NoCloud seeds: what a cloud image's VM is told at its first boot.

The seed is a small ISO 9660 volume labelled ``cidata`` holding ``meta-data``,
``user-data`` and ``network-config``
(https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html).
Rendering is pure; writing the ISO uses pycdlib, in-process.

* meta-data: the instance id (the VM id: a new VM is a new instance), the
  hostname, and the SSH public keys, which cloud-init gives to the image's
  default user.
* user-data: the caller's file, byte for byte, when given; else a minimal
  ``#cloud-config`` naming the default user.
* network-config (version 2): DHCP on every NIC, matched by MAC.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pycdlib

from hangar.spec.vm import CloudInit

LABEL = "cidata"


def render_seed(cloud_init: CloudInit, instance_id: str, macs: Sequence[str]) -> dict[str, bytes]:
    """The seed's files by name. Pure and deterministic.

    JSON is valid YAML, so the generated files are written as JSON: no YAML
    library, and no quoting mistakes with odd key comments.
    """
    meta = {
        "instance-id": f"hangar-{instance_id}",
        "local-hostname": cloud_init.hostname,
        "public-keys": list(cloud_init.ssh_keys),
    }
    if cloud_init.user_data is not None:
        user_data = cloud_init.user_data.encode()
    else:
        config = {
            "users": ["default"],
            "ssh_pwauth": False,
            # The keys arrive in meta-data; also name them here so they reach the
            # default user even where a datasource ignores public-keys.
            "ssh_authorized_keys": list(cloud_init.ssh_keys),
        }
        user_data = b"#cloud-config\n" + json.dumps(config, indent=2).encode() + b"\n"
    ethernets = {
        f"nic{i}": {"match": {"macaddress": mac}, "set-name": f"eth{i}", "dhcp4": True}
        for i, mac in enumerate(macs)
    }
    network = {"version": 2, "ethernets": ethernets}
    return {
        "meta-data": json.dumps(meta, indent=2).encode() + b"\n",
        "user-data": user_data,
        "network-config": json.dumps(network, indent=2).encode() + b"\n",
    }


def write_seed_iso(files: dict[str, bytes], target: Path) -> None:
    """Write ``files`` as an ISO 9660 volume labelled ``cidata`` (Joliet and Rock Ridge
    names, so ``meta-data`` keeps its dash), to ``target``."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    for index, (name, data) in enumerate(sorted(files.items())):
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/FILE{index};1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        iso.write(str(tmp))
    finally:
        iso.close()
    tmp.replace(target)


def read_seed_iso(path: Path) -> dict[str, bytes]:
    """The files of a seed ISO by their Rock Ridge names (for tests and diagnostics)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            buffer = io.BytesIO()
            iso.get_file_from_iso_fp(buffer, rr_path=f"/{name}")
            out[name] = buffer.getvalue()
        return out
    finally:
        iso.close()
