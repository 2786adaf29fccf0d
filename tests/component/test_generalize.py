"""Generalizing an ext4 root filesystem offline with debugfs (real mkfs.ext4 and debugfs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hangar.runner import SubprocessRunner
from hangar.services.storage.generalize import Ext4Image, generalize, parse_ls


def build(tmp_path: Path, files: dict[str, str], links: dict[str, str]) -> Path:
    root = tmp_path / "root"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    raw = tmp_path / "disk.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(raw), "16M"], check=True)
    return raw


def test_generalize_removes_identity_and_keeps_the_rest(tmp_path: Path) -> None:
    raw = build(
        tmp_path,
        {
            "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
            "etc/hostname": "old\n",
            "etc/ssh/ssh_host_ed25519_key": "secret",
            "etc/ssh/ssh_host_ed25519_key.pub": "public",
            "etc/ssh/sshd_config": "keep me",
            "var/lib/dhcp/dhclient.eth0.leases": "lease",
            "var/lib/cloud/instances/i-1/sem/config_ssh": "done",
            "var/lib/cloud/instances/i-1/user-data.txt": "data",
            "var/lib/cloud/data/instance-id": "i-1",
            "root/.ash_history": "ls",
            "root/keep": "mine",
        },
        {"var/lib/cloud/instance": "/var/lib/cloud/instances/i-1"},
    )
    runner = SubprocessRunner()
    changed = generalize(runner, raw)
    assert "emptied /etc/machine-id" in changed
    assert "removed /var/lib/cloud/instances" in changed
    image = Ext4Image(runner, raw)
    assert [e.name for e in image.ls("/etc/ssh") or []] == ["sshd_config"]
    assert image.ls("/var/lib/dhcp") == []
    assert [e.name for e in image.ls("/var/lib/cloud") or []] == []
    assert image.stat("/etc/hostname") is None and image.stat("/root/.ash_history") is None
    assert image.stat("/root/keep") is not None
    machine_id = subprocess.run(
        ["debugfs", "-R", "cat /etc/machine-id", str(raw)], capture_output=True, check=True
    )
    assert machine_id.stdout == b""
    fsck = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout  # the filesystem is still consistent
    assert generalize(runner, raw) == ["emptied /etc/machine-id"]  # idempotent apart from that


def test_parse_ls() -> None:
    out = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/12/100644/0/0/a b/5/\n/13/040700/0/0/d//\n"
    entries = parse_ls(out)
    assert entries is not None
    assert [(e.name, e.is_dir) for e in entries] == [("a b", False), ("d", True)]


def test_generalize_finds_the_root_partition_of_a_partitioned_disk(tmp_path: Path) -> None:
    # A GPT disk like debian-12's: an EFI system partition, then the ext4 root.
    part = build(tmp_path, {"etc/machine-id": "0123\n", "etc/hostname": "old\n"}, {})
    raw = tmp_path / "whole.raw"
    with raw.open("wb") as f:
        f.truncate(24 * 1024 * 1024)
    layout = "label: gpt\nstart=2048, size=4096, type=U\nstart=6144, size=32768, type=L\n"
    subprocess.run(["sfdisk", "-q", str(raw)], input=layout, text=True, check=True)
    subprocess.run(
        ["dd", f"if={part}", f"of={raw}", "bs=512", "seek=6144", "conv=notrunc", "status=none"],
        check=True,
    )
    runner = SubprocessRunner()
    changed = generalize(runner, raw)
    assert changed == ["emptied /etc/machine-id", "removed /etc/hostname"]
    root = Ext4Image(runner, f"{raw}?offset={6144 * 512}")
    assert root.stat("/etc/hostname") is None and root.stat("/etc/machine-id") is not None
    # A disk without a partition table is one filesystem, as before.
    assert generalize(runner, part) == changed
