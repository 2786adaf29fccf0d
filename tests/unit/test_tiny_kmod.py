"""Kernel module dependency resolution from synthetic ``.ko`` files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hangar.errors import InvalidInput
from hangar.services.storage.tiny import kmod


def fake_module(modinfo: dict[str, str]) -> bytes:
    """A minimal ELF64 relocatable with a ``.modinfo`` section, like a ``.ko``."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    str_off = info_off + len(info)
    sh_off = (str_off + len(shstrtab) + 7) // 8 * 8
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2)

    def section(name: int, kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    body = header + info + shstrtab
    body += b"\0" * (sh_off - len(body))
    body += section(0, 0, 0, 0)
    body += section(1, 1, info_off, len(info))
    body += section(10, 3, str_off, len(shstrtab))
    return body


def tree(tmp_path: Path, modules: dict[str, dict[str, str]]) -> dict[str, Path]:
    for rel, info in modules.items():
        path = tmp_path / "kernel" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fake_module(info))
    return kmod.module_index(tmp_path)


def test_modinfo_reads_the_section() -> None:
    info = kmod.modinfo(fake_module({"depends": "a,b", "license": "GPL", "alias": "x"}))
    assert info["depends"] == ["a,b"]
    assert info["license"] == ["GPL"]


def test_dependencies_come_first_once_each(tmp_path: Path) -> None:
    index = tree(
        tmp_path,
        {
            "fs/ext4/ext4.ko": {"depends": "jbd2,mbcache,crc16", "softdep": "pre: crc32c-x"},
            "fs/jbd2/jbd2.ko": {"depends": ""},
            "fs/mbcache.ko": {"depends": ""},
            "lib/crc16.ko": {"depends": ""},
            "crypto/crc32c-x.ko": {"depends": ""},
            "drivers/virtio/virtio_ring.ko": {"depends": ""},
            "drivers/virtio/virtio.ko": {"depends": "virtio_ring"},
            "drivers/block/virtio_blk.ko": {"depends": "virtio,virtio_ring"},
        },
    )
    order = [kmod.module_name(p) for p in kmod.load_order(["virtio_blk", "ext4"], index)]
    assert order == ["virtio_ring", "virtio", "virtio_blk", "jbd2", "mbcache", "crc16",
                     "crc32c_x", "ext4"]  # fmt: skip


def test_soft_dependency_aliases_are_skipped(tmp_path: Path) -> None:
    index = tree(tmp_path, {"fs/jbd2/jbd2.ko": {"depends": "", "softdep": "pre: crypto-crc32c"}})
    assert [p.name for p in kmod.load_order(["jbd2"], index)] == ["jbd2.ko"]


def test_missing_hard_dependency_is_an_error(tmp_path: Path) -> None:
    index = tree(tmp_path, {"drivers/net/virtio_net.ko": {"depends": "net_failover"}})
    with pytest.raises(InvalidInput, match="net_failover"):
        kmod.load_order(["virtio_net"], index)


def test_not_a_module() -> None:
    with pytest.raises(InvalidInput, match="ELF64"):
        kmod.modinfo(b"hello")
