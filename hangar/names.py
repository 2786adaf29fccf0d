"""Names that become paths: validated here, and only here, then resolved under their folder.

Every name a caller sends that ends up in a file system path (images, templates,
VMs, snapshots, pools, volumes, networks, …) goes through :func:`check_name`;
every path built from one goes through :func:`child` (a folder's entry) or
:func:`member` (a file an image or VM folder holds, as a manifest names it).
Both refuse what could step out of the folder (``/``, ``..``, absolute paths,
symlinks), so a name can never pick a folder somebody else wrote.

Pure apart from ``lstat`` of the path it returns; no pydantic, so the CLI may use it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from hangar.errors import InvalidInput

# The project every host starts with, and the one local requests act in by default.
DEFAULT_PROJECT = "default"

MAX_NAME = 63
# A DNS label: a VM's name becomes its guest's hostname, and every other resource
# follows the same rule so that one pattern guards every path.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
# A project: its name is a folder in each pool (volumes) and a label on everything.
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# A file inside a folder hangar made (kernel-<hash>, disk.qcow2, ram.img, …).
_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HINT = "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"


def check_name(name: str, *, what: str = "VM name") -> str:
    """Validate a resource name; raises :class:`InvalidInput` saying what to write instead."""
    if not name:
        raise InvalidInput(f"{what} must not be empty", hint=_HINT)
    if len(name) > MAX_NAME:
        raise InvalidInput(f"{what} '{name[:20]}…' is {len(name)} characters long", hint=_HINT)
    if "/" in name or ".." in name:
        raise InvalidInput(f"{what} '{name}' contains '/' or '..'", hint=_HINT)
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"{what} '{name}' has characters that are not allowed", hint=_HINT)
    return name


def check_project(name: str) -> str:
    """Validate a project name; raises :class:`InvalidInput`."""
    if not _PROJECT.fullmatch(name):
        raise InvalidInput(
            f"invalid project name '{name[:70]}'",
            hint="use 1-63 lowercase letters, digits and dashes, starting with a letter",
        )
    return name


def check_interface(name: str) -> str:
    """A Linux interface name (IFNAMSIZ: 15 bytes; no '/', space or ':')."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", name):
        raise InvalidInput(
            f"'{name[:20]}' is not an interface name",
            hint="1-15 letters, digits, '_', '.' or '-', as 'ip link' shows them",
        )
    return name


def check_member(filename: str, *, what: str = "file name") -> str:
    """Validate the name of a file inside a folder (no separator, no leading dot)."""
    if not _MEMBER.fullmatch(filename) or ".." in filename:
        raise InvalidInput(
            f"{what} '{filename[:40]}' is not a plain file name",
            hint="a manifest names files inside its own folder: letters, digits, '.', '_', '-'",
        )
    return filename


def child(root: Path, name: str, *, what: str) -> Path:
    """``root / name`` for a valid ``name``, refused if that entry is a symlink."""
    path = root / check_name(name, what=what)
    _not_a_link(path, what)
    return path


def member(folder: Path, filename: str, *, what: str = "file") -> Path:
    """``folder / filename`` for a plain file name, refused if it is a symlink."""
    path = folder / check_member(filename, what=what)
    _not_a_link(path, what)
    return path


def _not_a_link(path: Path, what: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise InvalidInput(
            f"{what} '{path.name}' is a symbolic link",
            hint="hangar only uses files it made itself; remove the link",
        )
