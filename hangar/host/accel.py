"""QEMU accelerator and CPU model arguments (pure).

One place decides how an accelerator is spelled on QEMU's command line, so the
KVM probe (:mod:`hangar.host.kvm`) tests exactly the flags that VMs later run
with.
"""

from __future__ import annotations

from hangar.spec.host import Accelerator, HostFacts

# Under TCG: qemu64 plus the x86-64-v2 features (SSSE3, SSE4.1, SSE4.2, POPCNT;
# qemu64 already has CX16, LAHF and SSE3). Userlands built for x86-64-v2 (RHEL 9
# family, some wheels) die on plain qemu64, and `max` costs boot time: the tiny
# guest reached its boot marker in 2.50-2.62 s with this model, 2.52-2.59 s with
# qemu64, 2.77-2.96 s with `max,-la57` and 3.13-3.34 s with `max` (same run,
# 3 boots each, bench command in the closing note of the slice).
TCG_CPU_MODEL = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"

# TCG's translation cache, sized with the guest: a quarter of its RAM, 32 to 256 MiB.
# Fixed at 32 MiB it kept an idle tiny guest at ~158 MiB PSS instead of ~184 MiB with
# QEMU's 1 GiB default (shared/MEASUREMENTS.md, "Density"), but it is too small for a
# Debian guest: its working code keeps being thrown out and translated again. A
# debian-12 cold boot took 84-103 s to sshd's banner with 32 MiB, 51-65 s with
# 256 MiB (4 boots each, interleaved), and a running guest's sshd answered in
# 0.30-0.36 s instead of 0.20-0.25 s. The cache fills only as far as the guest needs.
TCG_TB_MIN_MIB = 32
TCG_TB_MAX_MIB = 256


def tcg_tb_size_mib(memory: int | None) -> int:
    """The translation cache (MiB) for a guest with ``memory`` bytes of RAM (None: a
    probe guest)."""
    if memory is None:
        return TCG_TB_MIN_MIB
    return max(TCG_TB_MIN_MIB, min(TCG_TB_MAX_MIB, memory // 4 // 2**20))


# Under working KVM the guest sees the host CPU: fastest, and what guests expect.
KVM_CPU_MODEL = "host"


def accel_args_for(accelerator: Accelerator, cpus: int, memory: int | None = None) -> list[str]:
    """Return ``-accel ... -cpu ...`` for ``accelerator`` and a guest of ``cpus`` vCPUs
    and ``memory`` bytes of RAM (None: a probe guest).

    Raises :class:`ValueError` when ``cpus`` is below 1.
    """
    if cpus < 1:
        raise ValueError(f"a guest needs at least one vCPU, got {cpus}")
    if accelerator == "kvm":
        return ["-accel", "kvm", "-cpu", KVM_CPU_MODEL]
    # Multi-threaded TCG runs each vCPU on its own host thread; with one vCPU it
    # would only add locking, so it is asked for only for SMP guests.
    threads = "thread=multi," if cpus > 1 else ""
    options = f"tcg,{threads}tb-size={tcg_tb_size_mib(memory)}"
    return ["-accel", options, "-cpu", TCG_CPU_MODEL]


def accel_args(facts: HostFacts, cpus: int, memory: int | None = None) -> list[str]:
    """Return the accelerator and CPU arguments for a guest on the probed host.

    Deterministic for given inputs; raises :class:`ValueError` when ``cpus`` < 1.
    """
    return accel_args_for(facts.accelerator, cpus, memory)
