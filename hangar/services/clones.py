"""Copies of VMs (stopped or running) and templates published from stopped VMs.

A copy gets a new identity: id (and so UUID), name and MACs; port forwards are
not copied (the host ports belong to the source). Its boot files are hard
links in its own folder, so it never depends on the source VM.

* linked copy (default): a qcow2 that holds only what differs from the image
  the source was created from, backed by that image's disk;
* full copy (``--full``): one self-contained qcow2.

A running VM is copied at one point in time without stopping it: a QMP
``blockdev-backup`` job (copy-before-write: guest writes after the job starts
do not reach the copy) into a new qcow2 opened by QEMU with ``blockdev-add``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from datetime import UTC, datetime
from typing import Literal

from hangar.errors import Conflict, NextStep, NotFound
from hangar.names import check_name
from hangar.node.files import link_boot_files
from hangar.runner import CommandRunner
from hangar.services import guest_files
from hangar.services.lifecycle import PowerState
from hangar.services.progress import Reporter, quiet, span
from hangar.services.qemu import img
from hangar.services.storage.generalize import generalize
from hangar.services.storage.images import MANIFEST, ImageStore
from hangar.services.storage.importer import EXT4_MAGIC, EXT4_MAGIC_OFFSET
from hangar.services.templates.manifest import template_manifest
from hangar.services.undo import revert_on_error
from hangar.services.vms import VMService, VMView
from hangar.spec.image import ImageManifest
from hangar.spec.network import tap_name
from hangar.spec.resolve import mac_from_id
from hangar.spec.vm import VMConfig
from hangar.state.vms import DEFAULT_PROJECT

# How often a running copy's progress is read (query-jobs) and the caller may cancel
# it; its end comes as an event.


def copy_config(source: VMConfig, vm_id: str, name: str) -> VMConfig:
    """The source's config under a new identity: id, name, MACs, taps; no port forwards,
    no volumes, and network addresses left for the network service to give out anew."""
    nics = tuple(
        # A copy boots afresh: slirp's first address, as for a new VM.
        nic.model_copy(
            update={
                "mac": mac_from_id(vm_id, i),
                "forwards": (),
                "ip": None,
                "tap": tap_name(vm_id, i) if nic.type == "network" else None,
                "address": None,
                "dhcp_start": None,
            }
        )
        for i, nic in enumerate(source.nics)
    )
    update: dict[str, object] = {"id": vm_id, "name": name, "nics": nics, "data_disks": ()}
    # No install media; a cloud-init seed of its own (a new instance, named anew).
    update["iso"] = None
    if source.cloud_init is not None:
        update["cloud_init"] = source.cloud_init.model_copy(update={"hostname": name})
    return source.model_copy(update=update)


class CloneService:
    def __init__(self, vms: VMService, store: ImageStore, runner: CommandRunner):
        self.vms = vms
        self.store = store
        self.runner = runner

    async def copy(
        self,
        source_name: str,
        name: str,
        *,
        full: bool = False,
        start: bool = False,
        project: str = DEFAULT_PROJECT,
        progress: Reporter = quiet,
    ) -> VMView:
        """Copy VM ``source_name`` to a new VM ``name`` in the same project; the source
        may be running. ``progress`` hears how far the disk copy is."""
        check_name(name)
        record = self.vms.repo.get(source_name, project)
        async with self.vms.locks[f"name:{project}/{name}"]:
            if self.vms.repo.find(name, project) is not None:
                raise Conflict(
                    f"a VM named '{name}' already exists in project '{project}'",
                    hint="pick another name for the copy",
                )
            vm_id = uuid.uuid4().hex
            folder = self.vms.paths.vm_dir(vm_id)
            async with revert_on_error() as undo:
                folder.mkdir(parents=True)
                undo.push("remove copy's folder", lambda: shutil.rmtree(folder, ignore_errors=True))
                config = link_boot_files(copy_config(record.config, vm_id, name), folder)
                if config.cloud_init is not None:
                    config = guest_files.with_ssh_forward(config, self.vms.port_owners(config))
                await asyncio.to_thread(
                    guest_files.prepare, config, self.vms.files(config), self.vms.host, None
                )
                target = self.vms.files(config).disk
                async with self.vms.locks[record.id]:
                    percent = span(progress, f"copying the disk of '{record.name}'", 1, 98)
                    await self.vms.node.copy_root_disk(
                        record.config, target, full=full, progress=percent
                    )
                progress("registering the copy", percent=99)
                return await self.vms.adopt_copy(config, start=start, project=project)

    async def publish(
        self, vm_name: str, template: str, *, project: str = DEFAULT_PROJECT
    ) -> ImageManifest:
        """Capture stopped VM ``vm_name`` as template (image) ``template``, generalized."""
        check_name(template, what="template name")
        record = self.vms.repo.get(vm_name, project)
        target = self.store.path(template)
        if target.exists():
            raise Conflict(
                f"an image or template named '{template}' already exists",
                hint="pick another name, or delete that image first",
                details={"image": template},
                action=NextStep.DELETE_IMAGE,
            )
        async with self.vms.locks[record.id]:
            state = await self.vms.state_of(record)
            if state not in (PowerState.STOPPED, PowerState.CRASHED):
                raise Conflict(
                    f"cannot publish VM '{vm_name}': it is {state.value}",
                    hint="stop the VM first",
                    details={"state": state.value, "allowed": ["stopped"], "vm": vm_name},
                    action=NextStep.STOP_VM,
                )
            return await asyncio.to_thread(self._publish, record.config, template)

    def _firmware_of(self, config: VMConfig) -> tuple[Literal["bios", "uefi"], ...]:
        """The firmware the VM's disk boots with: its image's, else the VM's own."""
        if config.image:
            with contextlib.suppress(NotFound):
                return self.store.get(config.image).firmware
        return (config.firmware,) if config.firmware else ()

    def _publish(self, config: VMConfig, template: str) -> ImageManifest:
        self.store.root.mkdir(parents=True, exist_ok=True)
        tmp = self.store.root / f".publish-{template}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            disk = self.vms.files(config).disk
            raw = tmp / "disk.raw"
            img.convert(self.runner, disk, "qcow2", raw, "raw")
            with raw.open("rb") as f:
                head = f.read(4096)
            changed: list[str] = []
            if head[EXT4_MAGIC_OFFSET : EXT4_MAGIC_OFFSET + 2] == EXT4_MAGIC:
                changed = generalize(self.runner, raw)
            img.convert(self.runner, raw, "raw", tmp / "disk.qcow2", "qcow2")
            raw.unlink()
            # The boot files go with the template, under their own names.
            link_boot_files(config, tmp)
            manifest = template_manifest(
                config,
                template,
                made_at=datetime.now(UTC),
                disk="disk.qcow2",
                description=f"template from VM {config.name} (image {config.image}); "
                + ("generalized: " + ", ".join(changed) if changed else "nothing to generalize"),
                # What the disk can do carries over: a template of a cloud VM is a cloud image.
                firmware=self._firmware_of(config),
            )
            (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            os.rename(tmp, self.store.path(template))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest
