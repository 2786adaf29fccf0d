"""Kernel modules: find them in an extracted linux-image package, order them for insmod.

Debian's linux-image package ships no ``modules.dep`` (``depmod`` writes it when
the package is installed, and the host has no kmod), so dependencies are read
from each module's own ``.modinfo`` ELF section, the same data depmod uses.
"""

from __future__ import annotations

import struct
from pathlib import Path

from hangar.errors import InvalidInput

_ELF64_LE = b"\x7fELF\x02\x01"


def module_name(path: Path) -> str:
    """The kernel's name for a module file: dashes and underscores are the same."""
    return path.name.removesuffix(".ko").replace("-", "_")


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Every ``.ko`` under ``modules_dir`` (``lib/modules/VERSION``), by module name."""
    return {module_name(p): p for p in sorted(modules_dir.rglob("*.ko"))}


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's ``.modinfo`` section, values grouped by key."""
    section = _section(data, b".modinfo")
    info: dict[str, list[str]] = {}
    for entry in section.split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def dependencies(info: dict[str, list[str]]) -> list[str]:
    """Hard dependencies plus ``softdep pre:`` ones (e.g. ext4 wants crc32c first)."""
    names = [d for value in info.get("depends", []) for d in value.split(",") if d]
    for value in info.get("softdep", []):
        words = value.split()
        if "pre:" in words:
            for word in words[words.index("pre:") + 1 :]:
                if word.endswith(":"):
                    break
                names.append(word)
    return [n.replace("-", "_") for n in names]


def load_order(wanted: list[str], index: dict[str, Path]) -> list[Path]:
    """``wanted`` and everything they depend on, each after its dependencies.

    Soft dependencies that name no module file (aliases such as ``crc32c``) are
    skipped: list the providing module in ``wanted`` instead. Raises
    :class:`InvalidInput` when a wanted module or a hard dependency is missing.
    """
    ordered: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, hard: bool) -> None:
        if name in seen:
            return
        path = index.get(name)
        if path is None:
            if hard:
                raise InvalidInput(f"kernel module '{name}' is not in the kernel package")
            return
        seen.add(name)
        info = modinfo(path.read_bytes())
        hard_deps = {d for v in info.get("depends", []) for d in v.split(",") if d}
        for dep in dependencies(info):
            visit(dep, dep in hard_deps)
        ordered.append(path)

    for name in wanted:
        visit(name.replace("-", "_"), True)
    return ordered


def _section(data: bytes, wanted: bytes) -> bytes:
    if not data.startswith(_ELF64_LE):
        raise InvalidInput("kernel module is not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        (name,) = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, str_off, _ = header(shstrndx)
    for i in range(shnum):
        name, offset, size = header(i)
        end = data.index(b"\0", str_off + name)
        if data[str_off + name : end] == wanted:
            return data[offset : offset + size]
    raise InvalidInput(f"kernel module has no {wanted.decode()} section")
