"""Builders for test values: host facts, image manifests, VM configs."""

from __future__ import annotations

from hangar.spec.host import HostFacts
from hangar.spec.image import ImageManifest, WarmState
from hangar.spec.resolve import resolve
from hangar.spec.vm import VMCreate


def host_facts(**overrides: object) -> HostFacts:
    values: dict[str, object] = {
        "qemu_binary": "qemu-system-x86_64",
        "qemu_version": "7.2.22",
        "machine_types": ("microvm", "pc", "q35"),
        "cpus": 2,
        "memory_bytes": 24 * 1024**3,
        "accelerator": "tcg",
        "accelerator_reason": "test",
        "tsc_khz": 2999998,
        "kvm_device_present": True,
    }
    values.update(overrides)
    return HostFacts(**values)  # type: ignore[arg-type]


def tiny_manifest(**overrides: object) -> ImageManifest:
    values: dict[str, object] = {
        "name": "tiny",
        "recipe_hash": "0123456789abcdef",
        "created_at": "2026-11-26T00:00:00Z",
        "kernel": "vmlinux-0123456789ab",
        "initrd": "initrd-0123456789ab.img",
        "cmdline": "rdinit=/init",
        "disk": "disk-0123456789ab.qcow2",
        "disk_virtual_size": 128 * 1024**2,
        "boot_marker": "HANGAR-BOOT-COMPLETE",
    }
    values.update(overrides)
    return ImageManifest.model_validate(values)


def debian_manifest(**overrides: object) -> ImageManifest:
    """A cloud image like debian-12: kernel boot or BIOS/UEFI from its disk, cloud-init, agent."""
    values: dict[str, object] = {
        "name": "debian-12",
        "recipe_hash": "fedcba9876543210",
        "created_at": "2026-11-26T00:00:00Z",
        "kernel": "vmlinux-fedcba987654",
        "initrd": "initrd-fedcba987654.img",
        "cmdline": "root=UUID=aa62c63e-b104-5c84-b7b4-3c95cff439d2 ro",
        "disk": "disk-fedcba987654.qcow2",
        "disk_virtual_size": 2 * 1024**3,
        "boot_marker": "login:",
        "defaults": {"cpus": 1, "memory": 1024**3, "disk": 2 * 1024**3},
        "firmware": ["bios", "uefi"],
        "cloud_init": True,
        "default_user": "debian",
        "agent": True,
    }
    values.update(overrides)
    return ImageManifest.model_validate(values)


def warm_state(listener: int | None = 812, **config: object) -> WarmState:
    """A warm template's saved guest: a tiny VM with an agent and hangar's identity
    port, its script waiting (``listener``); ``config`` overrides the VM's config."""
    source = resolve(
        VMCreate(name="src", image="tiny"),
        tiny_manifest(),
        host_facts(),
        vm_id="f" * 32,
        kernel_path="/k",
        initrd_path=None,
    )
    fields: dict[str, object] = {"agent": True, "identity_channel": True, **config}
    return WarmState(
        memory="state.bin",
        ram="ram.img",
        listener=listener,
        config=source.model_copy(update=fields),
    )
