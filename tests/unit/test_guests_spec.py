"""Spec and resolve rules for cloud images, firmware, ISOs and displays; seed rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hangar.errors import InvalidInput
from hangar.services.clones import copy_config
from hangar.services.guests import parse_addresses
from hangar.services.storage.debian import disk
from hangar.services.storage.debian.recipe import find_mirror
from hangar.services.storage.seed import read_seed_iso, render_seed, write_seed_iso
from hangar.spec.resolve import resolve
from hangar.spec.vm import CloudInit, VMCreate
from tests.support.factories import debian_manifest, host_facts, tiny_manifest

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxUnitTestKeyUnitTestKeyUnitTestKey00 me@host"


def _resolve(request: VMCreate, image: object = "debian") -> object:
    manifest = debian_manifest() if image == "debian" else tiny_manifest() if image else None
    return resolve(
        request,
        manifest,  # type: ignore[arg-type]
        host_facts(),
        vm_id="ab" * 16,
        kernel_path="/i/vmlinux" if manifest else None,
        initrd_path="/i/initrd.img" if manifest else None,
    )


def test_ssh_keys_must_be_public_key_lines() -> None:
    assert VMCreate(name="a", image="debian-12", ssh_keys=[f"  {KEY}\n"]).ssh_keys == (KEY,)
    for bad in ("-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-ed25519", f"{KEY}\nssh-rsa AAAA"):
        with pytest.raises(ValidationError):
            VMCreate(name="a", image="debian-12", ssh_keys=[bad])


def test_iso_must_be_an_absolute_path_without_commas() -> None:
    assert VMCreate(name="a", iso="/srv/x.iso").iso == "/srv/x.iso"
    for bad in ("x.iso", "/srv/a,b.iso"):
        with pytest.raises(ValidationError):
            VMCreate(name="a", iso=bad)


def test_a_cloud_image_gets_cloud_init_and_an_agent() -> None:
    config = _resolve(VMCreate(name="web", image="debian-12", ssh_keys=[KEY]))
    assert config.cloud_init == CloudInit(hostname="web", user="debian", ssh_keys=(KEY,))
    assert config.agent and config.boot is not None and config.firmware is None
    assert config.machine == "microvm"


def test_keys_and_user_data_need_a_cloud_image() -> None:
    with pytest.raises(InvalidInput, match="does not use cloud-init"):
        _resolve(VMCreate(name="web", image="tiny", ssh_keys=[KEY]), image="tiny")


def test_firmware_boots_the_disk_on_q35() -> None:
    config = _resolve(VMCreate(name="web", image="debian-12", firmware="uefi"))
    assert config.firmware == "uefi" and config.boot is None and config.machine == "q35"


def test_firmware_needs_a_bootloader_on_the_image_disk() -> None:
    with pytest.raises(InvalidInput, match="no bootloader for bios"):
        _resolve(VMCreate(name="web", image="tiny", firmware="bios"), image="tiny")


def test_microvm_cannot_boot_firmware_or_show_a_screen() -> None:
    for fields in ({"firmware": "bios"}, {"graphics": True}):
        with pytest.raises(InvalidInput, match="microvm"):
            _resolve(VMCreate(name="w", image="debian-12", machine="microvm", **fields))


def test_an_iso_without_image_is_a_blank_bios_vm_with_a_screen() -> None:
    config = _resolve(VMCreate(name="inst", iso="/srv/i.iso", disk="8G"), image=None)
    assert config.image == "" and config.boot is None and config.firmware == "bios"
    assert config.graphics and config.iso == "i.iso" and config.disk_size == 8 * 1024**3


def test_no_image_and_no_iso_is_refused() -> None:
    with pytest.raises(InvalidInput, match="image or an installer ISO"):
        _resolve(VMCreate(name="x"), image=None)


def test_seed_names_host_keys_and_nics() -> None:
    seed = render_seed(
        CloudInit(hostname="web", user="debian", ssh_keys=(KEY,)), "ab12", ["52:54:00:00:00:01"]
    )
    meta = json.loads(seed["meta-data"])
    assert meta == {"instance-id": "hangar-ab12", "local-hostname": "web", "public-keys": [KEY]}
    assert seed["user-data"].startswith(b"#cloud-config\n")
    assert json.loads(seed["user-data"].split(b"\n", 1)[1])["ssh_authorized_keys"] == [KEY]
    nic = json.loads(seed["network-config"])["ethernets"]["nic0"]
    assert nic == {"match": {"macaddress": "52:54:00:00:00:01"}, "set-name": "eth0", "dhcp4": True}


def test_user_data_passes_through_byte_for_byte() -> None:
    mine = "#cloud-config\nruncmd:\n  - [touch, /x]\n# ünïcode\n"
    seed = render_seed(CloudInit(hostname="w", user="d", user_data=mine), "1", [])
    assert seed["user-data"] == mine.encode()


def test_seed_iso_is_labelled_cidata_and_round_trips(tmp_path: Path) -> None:
    files = render_seed(CloudInit(hostname="w", user="d", ssh_keys=(KEY,)), "1", ["52:54:00:a:b:c"])
    target = tmp_path / "seed.iso"
    write_seed_iso(files, target)
    data = target.read_bytes()
    assert data[16 * 2048 + 1 : 16 * 2048 + 6] == b"CD001"
    assert data[16 * 2048 + 40 : 16 * 2048 + 46] == b"cidata"
    assert read_seed_iso(target) == files


def test_gpt_layout_leaves_room_for_the_backup_table() -> None:
    layout = disk.Layout(2 * 1024**3)
    script = disk.sfdisk_script(layout)
    assert f"start={disk.ROOT_START}, size={layout.root_sectors}" in script
    assert disk.ROOT_START + layout.root_sectors + 33 <= layout.total_bytes // disk.SECTOR
    assert 'attrs="LegacyBIOSBootable"' in script and disk.ESP_TYPE in script


def test_bootloaders_boot_the_same_kernel_and_root() -> None:
    grub = disk.grub_cfg("u-u-i-d", "6.1.0-9-amd64")
    syslinux = disk.extlinux_conf("u-u-i-d", "6.1.0-9-amd64")
    for text in (grub, syslinux):
        assert "/boot/vmlinuz-6.1.0-9-amd64" in text and "root=UUID=u-u-i-d" in text
        assert "console=ttyS0" in text and "no_timer_check" in text


def test_copy_into_keeps_zero_blocks_sparse(tmp_path: Path) -> None:
    source = tmp_path / "part"
    source.write_bytes(bytes(disk.CHUNK) + b"data" + bytes(100))
    target = tmp_path / "disk"
    with target.open("wb") as f:
        f.truncate(8 * disk.CHUNK)
    disk.copy_into(source, target, 2 * disk.CHUNK)
    data = target.read_bytes()
    assert data[3 * disk.CHUNK : 3 * disk.CHUNK + 4] == b"data"
    assert target.stat().st_blocks * 512 < 2 * disk.CHUNK


def test_mirror_comes_from_the_hosts_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert find_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_a_one_line_list(tmp_path: Path) -> None:
    line = "deb [arch=amd64] http://m.example/debian bookworm main\n"
    (tmp_path / "sources.list").write_text(line)
    assert find_mirror(tmp_path) == "http://m.example/debian"


def test_agent_addresses_leave_out_loopback() -> None:
    nics = [
        {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
        {
            "name": "eth0",
            "hardware-address": "52:54:00:00:00:01",
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}],
        },
    ]
    [address] = parse_addresses(nics)
    assert (address.interface, address.address, address.prefix) == ("eth0", "10.0.2.15", 24)


def test_a_copy_is_a_new_cloud_init_instance_without_install_media() -> None:
    source = _resolve(VMCreate(name="web", image="debian-12", ssh_keys=[KEY]))
    source = source.model_copy(update={"iso": "installer.iso"})  # type: ignore[union-attr]
    copy = copy_config(source, "cd" * 16, "web2")
    assert copy.cloud_init is not None and copy.cloud_init.hostname == "web2"
    assert copy.cloud_init.ssh_keys == (KEY,) and copy.iso is None and copy.id == "cd" * 16
