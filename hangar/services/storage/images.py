"""The image store: built images, each in its own folder with an ``image.json``.

An image folder holds a kernel (uncompressed vmlinux, booted through its PVH
entry point), an optional initramfs, and a qcow2 root disk that VM disks are
linked clones of. Images are installed atomically: built in a temporary folder
next to the store and renamed into place only when complete.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from hangar.errors import InvalidInput, NextStep, NotFound
from hangar.names import child
from hangar.names import member as member_path
from hangar.runner import CommandRunner
from hangar.services.qemu.jail import QEMU_GID
from hangar.spec.image import IMAGE_FORMAT_VERSION, ImageDefaults, ImageManifest

__all__ = ["IMAGE_FORMAT_VERSION", "ImageDefaults", "ImageManifest", "ImageStore", "Recipe"]

MANIFEST = "image.json"
# Hidden work folders in the store; what is left of them after a crash is swept.
WORK_PREFIXES = (".build-", ".import-", ".publish-", ".delete-")


ProgressFn = Callable[[str], None]


class Recipe(Protocol):
    """Something that can build an image from Debian packages."""

    name: str

    def recipe_hash(self, runner: CommandRunner) -> str:
        """A digest of every input (recipe files, package versions): equal hash, same image."""
        ...

    def build(
        self, out_dir: Path, cache_dir: Path, runner: CommandRunner, progress: ProgressFn
    ) -> ImageManifest:
        """Build into the empty folder ``out_dir`` and return the manifest (not yet written)."""
        ...


class ImageStore:
    def __init__(self, root: Path):
        self.root = root

    def path(self, name: str) -> Path:
        """The folder of image or template ``name``: always an entry of the store."""
        return child(self.root, name, what="image name")

    def list(self, project: str | None = None) -> list[ImageManifest]:
        """Installed images; with ``project``, only those that project may use."""
        images = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                manifest = entry / MANIFEST
                if entry.is_dir() and not entry.name.startswith(".") and manifest.is_file():
                    try:
                        image = self._read(manifest)
                    except InvalidInput:
                        continue  # not made by hangar (or damaged): never offered
                    if image.visible_to(project):
                        images.append(image)
        return images

    def get(self, name: str, project: str | None = None) -> ImageManifest:
        """Image ``name``; with ``project``, 404 unless that project may use it (another
        project's template answers exactly as a missing one does)."""
        manifest = self.path(name) / MANIFEST
        image = self._read(manifest) if manifest.is_file() else None
        if image is None or not image.visible_to(project):
            known = ", ".join(m.name for m in self.list(project)) or "none"
            raise NotFound(
                f"no image named '{name}'",
                hint=f"images here: {known}; build or import one",
                action=NextStep.LIST_IMAGES,
            )
        return image

    def sweep(self) -> builtins.list[str]:
        """Remove what interrupted builds and imports left (hidden work folders).

        Called when hangard starts, before anything can be under way.
        """
        removed = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.is_dir() and entry.name.startswith(WORK_PREFIXES):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed

    def write(self, manifest: ImageManifest) -> None:
        """Replace installed image ``manifest.name``'s manifest (whole: renamed over)."""
        target = self.path(manifest.name) / MANIFEST
        tmp = target.with_name(f".{MANIFEST}.tmp")
        tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
        tmp.replace(target)

    def file(self, name: str, filename: str) -> Path:
        return member_path(self.path(name), filename, what=f"file of image '{name}'")

    def _read(self, manifest: Path) -> ImageManifest:
        _check_made_here(manifest.parent)
        _check_made_here(manifest)
        data = json.loads(manifest.read_text())
        if data.get("format_version") != IMAGE_FORMAT_VERSION:
            raise InvalidInput(
                f"image at {manifest.parent} has format version {data.get('format_version')}",
                hint=f"this hangar reads version {IMAGE_FORMAT_VERSION}; rebuild the image",
            )
        try:
            image = ImageManifest.model_validate(data)  # its file names are plain names
        except ValidationError as exc:
            raise InvalidInput(
                f"the manifest of image '{manifest.parent.name}' is not valid: "
                f"{exc.errors()[0]['msg']}",
                hint="delete the image and build or import it again",
                details={"image": manifest.parent.name},
                action=NextStep.DELETE_IMAGE,
            ) from exc
        for filename in image.files():
            path = member_path(manifest.parent, filename, what=f"file of image '{image.name}'")
            if path.exists():
                _check_made_here(path)
        return image

    def build(
        self,
        recipe: Recipe,
        cache_dir: Path,
        runner: CommandRunner,
        progress: ProgressFn,
        *,
        force: bool = False,
    ) -> tuple[ImageManifest, bool]:
        """Build ``recipe`` unless an image with the same recipe hash is installed.

        Returns the manifest and whether a build happened. A failed build leaves
        the store as it was.
        """
        wanted = recipe.recipe_hash(runner)
        target = self.path(recipe.name)
        if not force and (target / MANIFEST).is_file():
            current = self._read(target / MANIFEST)
            if current.recipe_hash == wanted:
                progress(f"image '{recipe.name}' is up to date")
                return current, False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".build-{recipe.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            built = recipe.build(tmp, cache_dir, runner, progress)
            manifest = _install(built, tmp, target, wanted)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return manifest, True


def _check_made_here(path: Path) -> None:
    """Refuse what hangard did not write itself: an image folder, manifest or file that
    another user owns, or that others may change, could name any file on the host as a
    kernel or disk (or be a qcow2 whose backing file is one) and so hand it to a guest.
    The store is private to hangard's user, so nothing else can put files there; this
    also refuses what was put there by hand."""
    info = os.lstat(path)
    # A warm template's RAM file is group-writable by the QEMUs' group (QEMU 7.2 opens
    # it read-write to map it private: services/qemu/confine.py); only a QEMU that
    # mounts it may, and QEMUs never see manifests.
    others = 0o002 if info.st_gid == QEMU_GID else 0o022
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & others:
        raise InvalidInput(
            f"'{path}' was not made by hangar (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}, link: {stat.S_ISLNK(info.st_mode)})",
            hint="hangar uses only images it built or imported; import the disk instead of "
            "copying it into the store",
            action=NextStep.IMPORT_IMAGE,
        )


def _install(built: ImageManifest, tmp: Path, target: Path, digest: str) -> ImageManifest:
    """Move a finished build into ``target`` under names that carry the recipe hash.

    VM disks are linked clones that name the image disk as their backing file,
    and VMs boot the kernel they were created with: files of earlier builds are
    never overwritten, only the manifest is replaced (atomically).
    """
    target.mkdir(exist_ok=True)
    tag = digest[:12]
    renames: dict[str, str] = {}
    for member in (built.kernel, built.initrd, built.disk):
        if member is None:
            continue
        stem, dot, suffix = member.partition(".")
        final = f"{stem}-{tag}{dot}{suffix}"
        # Private whatever the recipe made it (a kernel is hard-linked from the
        # package cache, which other tools may have made world-readable).
        os.chmod(tmp / member, 0o600)
        os.replace(tmp / member, target / final)
        renames[member] = final
    manifest = built.model_copy(
        update={
            "recipe_hash": digest,
            "kernel": renames[built.kernel] if built.kernel else None,
            "initrd": renames[built.initrd] if built.initrd else None,
            "disk": renames[built.disk],
        }
    )
    staging = target / f".{MANIFEST}.tmp"
    staging.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(staging, target / MANIFEST)
    return manifest
