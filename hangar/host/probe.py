"""Probe the host once and return :class:`~hangar.spec.host.HostFacts`.

The parsers here are pure (text in, value out) and tested against outputs
recorded on a real host (``tests/data/host/``). :func:`probe_host` runs QEMU
through the injected :class:`~hangar.runner.CommandRunner` and reads /proc.
"""

from __future__ import annotations

import logging
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from hangar.errors import HostCommandFailed
from hangar.host import cache
from hangar.host.kvm import AccelDecision, decide_accelerator, probe_accelerator
from hangar.runner import CommandRunner
from hangar.spec.host import HostFacts

log = logging.getLogger(__name__)

_QUERY_TIMEOUT_S = 30.0
# Preferred machine for the probe guest: hangar's own default first.
_PROBE_MACHINES = ("microvm", "q35", "pc")

_VERSION = re.compile(r"QEMU emulator version (\S+)")
_MEMTOTAL = re.compile(r"^MemTotal:\s+(\d+)\s*kB\s*$", re.MULTILINE)


# --- parsers (pure) ------------------------------------------------------------------


def parse_qemu_version(text: str) -> str:
    """Return the version from ``qemu-system-* -version`` output, e.g. ``"7.2.22"``.

    Raises :class:`ValueError` if the text is not QEMU's version banner.
    """
    match = _VERSION.search(text)
    if not match:
        raise ValueError(f"no 'QEMU emulator version' in {text[:200]!r}")
    return match.group(1)


def parse_machine_types(text: str) -> tuple[str, ...]:
    """Return machine type names (aliases included) from ``-machine help``, in QEMU's order.

    Raises :class:`ValueError` if the list header is missing or the list is empty.
    """
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Supported machines"))
    except StopIteration:
        raise ValueError(f"no 'Supported machines' in {text[:200]!r}") from None
    names: list[str] = []
    for line in lines[start + 1 :]:
        fields = line.split()
        if fields and fields[0] not in names:
            names.append(fields[0])
    if not names:
        raise ValueError("QEMU lists no machine types")
    return tuple(names)


def parse_meminfo_total(text: str) -> int:
    """Return MemTotal from /proc/meminfo in bytes. Raises :class:`ValueError` if absent."""
    match = _MEMTOTAL.search(text)
    if not match:
        raise ValueError("no MemTotal line in /proc/meminfo")
    return int(match.group(1)) * 1024


def parse_tsc_khz(cpuinfo: str) -> int | None:
    """Return the host TSC frequency in kHz from /proc/cpuinfo, or None when unsure.

    /proc/cpuinfo has no TSC field; its "cpu MHz" equals the TSC frequency only
    when the kernel reports its calibrated ``cpu_khz``. So the value is trusted
    only if: the TSC is invariant (``constant_tsc`` and ``nonstop_tsc``); there is
    no ``aperfmperf`` flag (with it, the kernel reports the measured, varying
    core clock instead); and every CPU reports the same value (a varying value
    is a core clock, not the TSC). Otherwise None: callers then leave the guest
    to calibrate by itself.
    """
    blocks = [block for block in cpuinfo.split("\n\n") if block.strip()]
    mhz_values: set[str] = set()
    flags: set[str] | None = None
    for block in blocks:
        fields = _cpuinfo_fields(block)
        if "cpu MHz" in fields:
            mhz_values.add(fields["cpu MHz"])
        if flags is None and "flags" in fields:
            flags = set(fields["flags"].split())
    if flags is None or len(mhz_values) != 1:
        return None
    if not {"constant_tsc", "nonstop_tsc"} <= flags or "aperfmperf" in flags:
        return None
    try:
        khz = int(Decimal(mhz_values.pop()) * 1000)
    except InvalidOperation:
        return None
    return khz if khz > 0 else None


def _cpuinfo_fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def probe_machine(machine_types: tuple[str, ...]) -> str:
    """The machine type the probe guest runs on: hangar's preferred one that exists."""
    for machine in _PROBE_MACHINES:
        if machine in machine_types:
            return machine
    return machine_types[0]


# --- the probe -----------------------------------------------------------------------


def probe_host(
    runner: CommandRunner,
    *,
    qemu_binary: str = "qemu-system-x86_64",
    cache_file: Path | None = None,
    kvm_device: Path = Path("/dev/kvm"),
) -> HostFacts:
    """Probe QEMU, CPUs, memory, TSC and the accelerator; return the facts.

    The KVM verdict comes from ``cache_file`` when it holds one for the same
    kernel release, QEMU and KVM device; otherwise the probe guest runs (adds
    ~0.2 s, at most ~2.3 s when KVM hangs) and the verdict is cached.

    Raises :class:`HostCommandFailed` if QEMU cannot be run or does not answer
    like QEMU. Never raises because KVM is broken: that is a TCG verdict.
    """
    version_text = _query(runner, [qemu_binary, "-version"])
    machines_text = _query(runner, [qemu_binary, "-machine", "help"])
    try:
        qemu_version = parse_qemu_version(version_text)
        machine_types = parse_machine_types(machines_text)
    except ValueError as exc:
        raise HostCommandFailed(
            [qemu_binary, "-version"],
            0,
            str(exc),
            hint=f"is '{qemu_binary}' a QEMU system emulator?",
        ) from exc

    identity = cache.device_identity(kvm_device)
    kvm_present = identity is not None
    if identity is None:
        decision = decide_accelerator(False, None, None, kvm_device=str(kvm_device))
    else:
        key = cache.cache_key(
            kernel_release=os.uname().release,
            qemu_binary=qemu_binary,
            qemu_version_line=version_text.strip().splitlines()[0],
            kvm_device=identity,
        )
        decision = _cached_or_probed(
            runner, qemu_binary, probe_machine(machine_types), kvm_device, cache_file, key
        )
    log.info("accelerator: %s — %s", decision.accelerator, decision.reason)

    return HostFacts(
        qemu_binary=qemu_binary,
        qemu_version=qemu_version,
        machine_types=machine_types,
        cpus=len(os.sched_getaffinity(0)),
        memory_bytes=parse_meminfo_total(Path("/proc/meminfo").read_text()),
        accelerator=decision.accelerator,
        accelerator_reason=decision.reason,
        tsc_khz=parse_tsc_khz(Path("/proc/cpuinfo").read_text()),
        kvm_device_present=kvm_present,
        **find_ovmf(),
    )


# Debian's ovmf package: the 4 MiB build (2 MiB is the older layout).
OVMF_PAIRS = [
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
]


def find_ovmf() -> dict[str, str | None]:
    """The first OVMF code/vars pair present on this host (without Secure Boot keys)."""
    for code, vars_ in OVMF_PAIRS:
        if Path(code).is_file() and Path(vars_).is_file():
            return {"ovmf_code": code, "ovmf_vars": vars_}
    return {"ovmf_code": None, "ovmf_vars": None}


def _cached_or_probed(
    runner: CommandRunner,
    qemu_binary: str,
    machine: str,
    kvm_device: Path,
    cache_file: Path | None,
    key: dict[str, object],
) -> AccelDecision:
    if cache_file is not None:
        hit = cache.load_cached(cache_file, key)
        if hit is not None:
            reason = f"{hit.decision.reason} (cached probe from {hit.probed_at})"
            return AccelDecision(hit.decision.accelerator, reason)
    decision, kvm, tcg = probe_accelerator(
        runner,
        qemu_binary=qemu_binary,
        machine=machine,
        kvm_present=True,
        kvm_device=str(kvm_device),
    )
    if cache_file is not None:
        cache.store(cache_file, key, decision, kvm, tcg)
    return decision


def _query(runner: CommandRunner, argv: list[str]) -> str:
    return runner.run(argv, timeout=_QUERY_TIMEOUT_S).stdout
