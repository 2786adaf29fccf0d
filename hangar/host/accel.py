"""QEMU accelerator and CPU model arguments (pure).

One place decides how an accelerator is spelled on QEMU's command line, so the
KVM probe (:mod:`hangar.host.kvm`) tests exactly the flags that VMs later run
with.
"""

from __future__ import annotations

from hangar.host.facts import Accelerator, HostFacts

# Under TCG, `max` enables every feature TCG can emulate (QEMU 7.2: up to
# SSE4.2/POPCNT/AVX2, i.e. x86-64-v3). `qemu64` is only x86-64-v1: a Debian 6.1
# kernel boots with either on microvm (measured: same boot and fork times), but
# userlands built for x86-64-v2 or later (RHEL 9 family, some wheels) die on
# qemu64 with "CPU does not support x86-64-v2". Trade-off: `max` is not a stable
# model across QEMU versions, so a saved state only restores on a QEMU with the
# same feature set (fine on one host; migration between hosts must pin a model).
TCG_CPU_MODEL = "max"

# A 32 MiB translation buffer instead of QEMU's default keeps an idle guest at
# ~158 MiB PSS instead of ~184 MiB (shared/MEASUREMENTS.md, "Density").
TCG_TB_SIZE_MIB = 32

# Under working KVM the guest sees the host CPU: fastest, and what guests expect.
KVM_CPU_MODEL = "host"


def accel_args_for(accelerator: Accelerator, cpus: int) -> list[str]:
    """Return ``-accel ... -cpu ...`` for ``accelerator`` and a guest of ``cpus`` vCPUs.

    Raises :class:`ValueError` when ``cpus`` is below 1.
    """
    if cpus < 1:
        raise ValueError(f"a guest needs at least one vCPU, got {cpus}")
    if accelerator == "kvm":
        return ["-accel", "kvm", "-cpu", KVM_CPU_MODEL]
    # Multi-threaded TCG runs each vCPU on its own host thread; with one vCPU it
    # would only add locking, so it is asked for only for SMP guests.
    threads = "thread=multi," if cpus > 1 else ""
    options = f"tcg,{threads}tb-size={TCG_TB_SIZE_MIB}"
    return ["-accel", options, "-cpu", TCG_CPU_MODEL]


def accel_args(facts: HostFacts, cpus: int) -> list[str]:
    """Return the accelerator and CPU arguments for a guest on the probed host.

    Deterministic for given inputs; raises :class:`ValueError` when ``cpus`` < 1.
    """
    return accel_args_for(facts.accelerator, cpus)
