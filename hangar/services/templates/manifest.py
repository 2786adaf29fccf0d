"""The manifest of a template made from a VM (``publish``, cold or warm). Pure.

Both kinds describe the source VM the same way (its boot files, its sizes as the
template's defaults, what its disk can do); a warm one adds the saved guest.

``recipe_hash`` says what an image was made from. For a built image it is the recipe's
digest, and ``ImageStore.build`` rebuilds when the recipe's differs from the installed
one (services/storage/images.py). For a template it is a digest of what it was
captured from: the kind of capture, the source VM's id and config (as a manifest may
show it: no keys, no user-data) and the moment. Its input starts with a tag no
recipe's input starts with (the recipes hash "tiny …" or "debian-12 …" settings
first), so a template's hash is never a recipe's: a build of a recipe never takes a
template for an up-to-date image of it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from hangar.spec.image import ImageDefaults, ImageManifest, WarmState
from hangar.spec.vm import VMConfig

# Changed when what is hashed changes: a digest never means two things.
HASH_TAG = "hangar-template 1"


def without_secrets(config: VMConfig) -> VMConfig:
    """``config`` as a manifest may show it: every viewer reads manifests, and launches
    take their own keys and user-data, so the source VM's never leave it. The seed
    stays (the saved guest has its drive). Pure."""
    if config.cloud_init is None:
        return config
    seed = config.cloud_init.model_copy(update={"ssh_keys": (), "user_data": None})
    return config.model_copy(update={"cloud_init": seed})


def template_hash(kind: Literal["cold", "warm"], config: VMConfig, made_at: datetime) -> str:
    """The ``recipe_hash`` of a ``kind`` template captured from the VM of ``config`` at
    ``made_at``: a sha256 hex digest, as a recipe's is, of an input no recipe's has
    (see the module's docs). The config's secrets are left out: every viewer of the
    template reads the digest. Pure."""
    digest = hashlib.sha256()
    digest.update(f"{HASH_TAG}\n{kind}\n{config.id}\n{made_at.isoformat()}\n".encode())
    digest.update(without_secrets(config).model_dump_json().encode())
    return digest.hexdigest()


def template_manifest(
    config: VMConfig,
    name: str,
    *,
    made_at: datetime,
    disk: str,
    description: str,
    firmware: tuple[Literal["bios", "uefi"], ...] = (),
    warm: WarmState | None = None,
    project: str | None = None,
) -> ImageManifest:
    """The manifest of template ``name`` captured at ``made_at`` from the VM of
    ``config``: its disk file ``disk`` and the VM's boot files (linked into the
    template's folder under their own names), the VM's sizes as its defaults, and what
    its disk can do (``firmware``; a cloud VM's template is a cloud image, an agent's
    has the agent). ``warm``: the saved guest, for a warm template. ``project``: the
    project it belongs to (None: shared). Pure."""
    boot = config.boot
    return ImageManifest(
        name=name,
        recipe_hash=template_hash("warm" if warm is not None else "cold", config, made_at),
        created_at=made_at.isoformat(timespec="seconds"),
        kernel=Path(boot.kernel).name if boot else None,
        initrd=Path(boot.initrd).name if boot and boot.initrd else None,
        cmdline=boot.cmdline if boot else "",
        disk=disk,
        disk_virtual_size=config.disk_size,
        boot_marker=config.boot_marker,
        defaults=ImageDefaults(
            cpus=config.cpus,
            memory=config.memory,
            disk=config.disk_size,
            nics=max(1, len(config.nics)),
            machine=config.machine,
        ),
        description=description,
        origin="publish",
        firmware=firmware,
        cloud_init=config.cloud_init is not None,
        default_user=config.cloud_init.user if config.cloud_init else "",
        agent=config.agent,
        warm=warm,
        project=project,
    )
