"""Image import, export and deletion use cases (the API's /1.0/images/import, /1.0/exports)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from hangar.errors import Conflict, InvalidInput, NotFound
from hangar.names import check_name
from hangar.runner import CommandRunner
from hangar.services.lifecycle import PowerState
from hangar.services.progress import Reporter, quiet, span
from hangar.services.qemu import img
from hangar.services.storage import exporter
from hangar.services.storage.exporter import ExportFormat, Hardware
from hangar.services.storage.formats import Format
from hangar.services.storage.images import ImageStore
from hangar.services.storage.importer import (
    DEFAULT_MAX_VIRTUAL_SIZE,
    BootKit,
    Importer,
    ImportRequest,
)
from hangar.services.vms import VMService
from hangar.spec.image import ImageManifest
from hangar.spec.units import parse_size
from hangar.state.vms import DEFAULT_PROJECT

# Images whose kernel boots imported ext4 root disks, most preferred first.
BOOT_KIT_IMAGES = ("tiny",)


class ImportResult(BaseModel):
    image: ImageManifest
    log: list[str]


class ExportResult(BaseModel):
    path: str
    source: str
    source_kind: str
    format: str
    size: int


def max_virtual_size_from_env(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    text = env.get("HANGAR_MAX_IMAGE_SIZE")
    return parse_size(text, what="HANGAR_MAX_IMAGE_SIZE") if text else DEFAULT_MAX_VIRTUAL_SIZE


def name_from_file(path: Path) -> str:
    """A default image name from a file name: 'Debian 12.x86_64.vmdk' -> 'debian-12-x86-64'."""
    stem = path.name.split(".")[0] if path.name.count(".") == 1 else path.name.rsplit(".", 1)[0]
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:63].strip("-")
    return name or "imported"


class TransferService:
    def __init__(
        self,
        store: ImageStore,
        vms: VMService,
        runner: CommandRunner,
        *,
        max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE,
    ):
        self.store = store
        self.vms = vms
        self.runner = runner
        self.max_virtual_size = max_virtual_size
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def boot_kit(self) -> BootKit | None:
        for name in BOOT_KIT_IMAGES:
            try:
                image = self.store.get(name)
            except NotFound:
                continue
            if image.kernel is None:
                continue
            folder = self.store.path(name)
            return BootKit(
                image=name,
                kernel=folder / image.kernel,
                initrd=folder / image.initrd if image.initrd else None,
                cmdline=image.cmdline,
                boot_marker=image.boot_marker,
            )
        return None

    async def import_image(
        self,
        path: str,
        *,
        name: str | None = None,
        fmt: Format | None = None,
        max_size: int | None = None,
        progress: Reporter = quiet,
    ) -> ImportResult:
        source = Path(path)
        if not source.is_absolute():
            raise InvalidInput(f"import path '{path}' is not absolute", hint="give a full path")
        image_name = check_name(name or name_from_file(source), what="image name")
        request = ImportRequest(
            source=source,
            name=image_name,
            format=fmt,
            max_virtual_size=max_size or self.max_virtual_size,
        )
        log: list[str] = []

        def report(
            message: str = "", *, percent: float | None = None, nbytes: int | None = None
        ) -> None:
            if message and (not log or log[-1] != message):
                log.append(message)
            progress(message, percent=percent, nbytes=nbytes)

        async with self._locks[image_name]:
            manifest = await asyncio.to_thread(
                Importer(self.store, self.runner).run, request, self.boot_kit(), report
            )
        return ImportResult(image=manifest, log=log)

    async def export(
        self,
        source: str,
        fmt: ExportFormat,
        path: str,
        *,
        project: str = DEFAULT_PROJECT,
        progress: Reporter = quiet,
    ) -> ExportResult:
        """Export image or VM ``source`` (an image name first, then a VM name) to ``path``.

        A running VM is exported as its disk was at one point in time (a QMP
        backup job into a temporary qcow2), without being stopped.
        """
        target = exporter.check_target(Path(path))
        image = self._find_image(source)
        if image is not None:
            disk = self.store.path(image.name) / image.disk
            hardware = Hardware(
                name=image.name,
                cpus=image.defaults.cpus,
                memory=image.defaults.memory,
                nics=image.defaults.nics,
                description=image.description,
            )
            percent = span(progress, f"writing {fmt}", 0, 99)
            async with self._locks[image.name]:
                await asyncio.to_thread(
                    exporter.export, self.runner, disk, fmt, target, hardware, percent
                )
            kind = "image"
        else:
            record = self.vms.repo.find(source, project)
            if record is None:
                raise NotFound(
                    f"no image or VM named '{source}'",
                    hint="list the images and the VMs to see what there is",
                )
            config = record.config
            async with self.vms.locks[record.id]:
                state = await self.vms.state_of(record)
                live = state in (
                    PowerState.RUNNING,
                    PowerState.PAUSED,
                ) and self.vms.node.is_running(record.id)
                if not live and state not in (PowerState.STOPPED, PowerState.CRASHED):
                    raise Conflict(
                        f"cannot export VM '{source}' while it is {state.value}",
                        hint="wait until it is running, paused or stopped",
                    )
                hardware = Hardware(
                    name=config.name,
                    cpus=config.cpus,
                    memory=config.memory,
                    nics=len(config.nics),
                    description=f"hangar VM {config.name} (image {config.image})",
                )
                disk = self.vms.files(config).disk
                snapshot = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.snapshot"
                try:
                    if live:
                        # One point in time, without stopping the VM (as 'copy' does).
                        await self.vms.node.copy_root_disk(
                            config,
                            snapshot,
                            full=True,
                            progress=span(progress, "copying the running disk", 0, 50),
                        )
                        disk = snapshot
                    percent = span(progress, f"writing {fmt}", 50 if live else 0, 99)
                    await asyncio.to_thread(
                        exporter.export, self.runner, disk, fmt, target, hardware, percent
                    )
                finally:
                    snapshot.unlink(missing_ok=True)
            kind = "vm"
        return ExportResult(
            path=str(target),
            source=source,
            source_kind=kind,
            format=fmt,
            size=target.stat().st_size,
        )

    def _find_image(self, name: str) -> ImageManifest | None:
        try:
            return self.store.get(name)
        except (NotFound, InvalidInput):
            return None

    def users_of(self, name: str) -> list[str]:
        """VMs that need image ``name``: linked clones of its disk, or booting its kernel."""
        folder = self.store.path(name).absolute()
        users = []
        for record in self.vms.repo.list():
            config = record.config
            kernel = Path(config.boot.kernel).absolute() if config.boot else None
            if kernel is not None and folder in kernel.parents:
                users.append(config.name)
                continue
            files = self.vms.files(config)
            if not files.disk.exists():
                continue
            # Below the VM's snapshot layers (in its own folder) lies the image's disk.
            backing = img.backing_file(self.runner, files.disk)
            while backing is not None and backing.is_relative_to(files.dir):
                backing = img.backing_file(self.runner, backing)
            if backing and folder in backing.absolute().parents:
                users.append(config.name)
        return users

    async def delete_image(self, name: str) -> None:
        """Delete an image or template; refused while VMs are linked clones of it."""
        self.store.get(name)
        async with self._locks[name]:
            users = await asyncio.to_thread(self.users_of, name)
            if users:
                raise Conflict(
                    f"image '{name}' is in use by {len(users)} VM(s): {', '.join(sorted(users))}",
                    hint="delete those VMs first (full copies do not count)",
                    details={"vms": sorted(users)},
                )
            folder = self.store.path(name)
            # Rename first: the image vanishes at once, then its files go.
            doomed = folder.with_name(f".delete-{name}")
            os.rename(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
