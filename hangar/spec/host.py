"""Facts about the host: probed once by :mod:`hangar.host.probe`, passed around as values.

A spec-level type: resolving a VM spec (spec.resolve) and rendering QEMU argv are pure
functions of the spec and these facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Accelerator = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class HostFacts:
    qemu_binary: str
    qemu_version: str
    machine_types: tuple[str, ...]
    cpus: int
    memory_bytes: int
    accelerator: Accelerator
    accelerator_reason: str
    # Host TSC frequency, passed to microvm guests as tsc_early_khz: under load the
    # guest's own calibration can fail and hang the boot (shared/MEASUREMENTS.md).
    tsc_khz: int | None
    kvm_device_present: bool
    # OVMF (UEFI) firmware: read-only code and the template each VM's variable store
    # is copied from. None when the ovmf package is missing.
    ovmf_code: str | None = None
    ovmf_vars: str | None = None

    @property
    def maps_read_only_ram(self) -> bool:
        """QEMU 8.2 added memory-backend-file's ``rom=off``: with ``readonly=on`` it
        opens a file read-only and still maps it private and writable. Older QEMUs
        open every RAM file read-write, even to map it private."""
        try:
            major, minor = (int(n) for n in self.qemu_version.split(".")[:2])
        except ValueError:
            return False
        return (major, minor) >= (8, 2)
