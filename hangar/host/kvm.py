"""Is KVM usable here? Run the probe guest under KVM and TCG, then decide.

``/dev/kvm`` existing is not enough. Some hosts expose a KVM that cannot run
ordinary guests at useful speed: on a pagetable-based KVM (``kvm_pvm``) a stock
kernel never finishes booting, a busy loop runs thousands of times slower than
native, and ``-cpu host`` aborts on MSR 0x10a (shared/MEASUREMENTS.md). So
hangar runs the self-contained guest of :mod:`hangar.host.probe_guest` with the
exact accelerator and CPU flags VMs would get (:mod:`hangar.host.accel`), first
under TCG, then under KVM with a short deadline, and trusts KVM only if the
guest finished there and was no slower than under TCG.

:func:`decide_accelerator` is pure; :func:`run_probe_guest` and
:func:`probe_accelerator` run QEMU through the injected command runner.
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from hangar.errors import HostCommandFailed
from hangar.host.accel import accel_args_for
from hangar.host.probe_guest import (
    DEBUG_EXIT_PORT,
    DEBUGCON_PORT,
    DEFAULT_LOOPS,
    EXIT_STATUS,
    build_probe_rom,
    parse_probe_output,
)
from hangar.runner import CommandRunner
from hangar.spec.host import Accelerator

Outcome = Literal["finished", "timeout", "failed"]

# The KVM attempt may take this long before KVM is judged unusable. A working
# KVM finishes in ~0.05 s, QEMU start-up included; TCG needs ~0.1 s here. Two
# seconds leaves room for a loaded host without a false "unusable".
KVM_DEADLINE_S = 2.0
# TCG must always work; this only stops a broken QEMU from hanging startup.
TCG_DEADLINE_S = 20.0
# Enough RAM for the page tables at 0x1000..0x4fff and QEMU's minimum.
_PROBE_MEMORY_MB = 16


@dataclass(frozen=True)
class ProbeRun:
    """What happened when the probe guest ran under one accelerator.

    ``seconds`` is the wall time of the whole QEMU run (start-up included);
    ``ticks`` is the guest's own TSC measurement of its busy loop, or None if
    it did not report one. ``detail`` says why the run failed, or is empty.
    """

    accelerator: Accelerator
    outcome: Outcome
    seconds: float
    deadline: float
    ticks: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeRun:
        """Rebuild a run from :meth:`to_json`; raises KeyError/TypeError/ValueError if malformed."""
        accelerator = data["accelerator"]
        outcome = data["outcome"]
        if accelerator not in ("kvm", "tcg") or outcome not in ("finished", "timeout", "failed"):
            raise ValueError(f"bad probe run: {data!r}")
        ticks = data.get("ticks")
        return cls(
            accelerator=accelerator,
            outcome=outcome,
            seconds=float(data["seconds"]),
            deadline=float(data["deadline"]),
            ticks=int(ticks) if ticks is not None else None,
            detail=str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class AccelDecision:
    accelerator: Accelerator
    reason: str


# --- the decision (pure) -------------------------------------------------------------


def kvm_slower_than_tcg(kvm: ProbeRun, tcg: ProbeRun) -> bool:
    """True if the finished KVM run did the guest work slower than the TCG run.

    Compares the guest's own TSC measurements when both have one: they exclude
    QEMU start-up, which differs between accelerators and is noise here. Falls
    back to wall time otherwise.
    """
    if kvm.ticks is not None and tcg.ticks is not None:
        return kvm.ticks > tcg.ticks
    return kvm.seconds > tcg.seconds


def decide_accelerator(
    kvm_present: bool,
    kvm: ProbeRun | None,
    tcg: ProbeRun | None,
    *,
    kvm_device: str = "/dev/kvm",
) -> AccelDecision:
    """Choose the accelerator and say why, in one sentence a person can act on.

    KVM is chosen only if the device is present, the KVM run finished and (when
    a TCG run finished to compare with) KVM was no slower than TCG. Everything
    else means TCG, which is always possible; a failed TCG run is mentioned
    because it points at a broken QEMU installation.
    """
    if not kvm_present:
        return AccelDecision("tcg", f"no {kvm_device} — using TCG")
    tcg_ok = tcg is not None and tcg.outcome == "finished"
    if kvm is not None and kvm.outcome == "finished":
        if tcg is not None and tcg_ok and kvm_slower_than_tcg(kvm, tcg):
            return AccelDecision(
                "tcg",
                f"KVM: {kvm_device} present but unusable (probe guest took "
                f"{kvm.seconds:.3f} s under KVM, {tcg.seconds:.3f} s under TCG"
                f"{_ratio_text(kvm, tcg)}) — using TCG",
            )
        tcg_text = f"; TCG {tcg.seconds:.3f} s" if tcg is not None and tcg_ok else ""
        return AccelDecision("kvm", f"KVM works (probe {kvm.seconds:.3f} s{tcg_text})")

    if kvm is None:
        why = "KVM was not probed"
    elif kvm.outcome == "timeout":
        why = f"probe guest did not finish in {kvm.deadline:.1f} s"
    else:
        flags = " ".join(accel_args_for("kvm", 1))
        why = f"the probe guest failed under {flags}: {kvm.detail or 'no error message'}"
    if tcg is not None and tcg_ok:
        return AccelDecision(
            "tcg",
            f"KVM: {kvm_device} present but unusable ({why}; TCG did it in "
            f"{tcg.seconds:.2f} s) — using TCG",
        )
    tcg_why = "not run" if tcg is None else (tcg.detail or tcg.outcome)
    return AccelDecision(
        "tcg",
        f"KVM: {kvm_device} present but unusable ({why}) — using TCG, but the TCG probe "
        f"failed too ({tcg_why}): check the QEMU installation",
    )


def _ratio_text(kvm: ProbeRun, tcg: ProbeRun) -> str:
    if kvm.ticks is None or tcg.ticks is None or tcg.ticks <= 0:
        return ""
    return f"; its busy loop ran {kvm.ticks / tcg.ticks:.1f}× slower under KVM"


# --- running the probe guest ---------------------------------------------------------


def probe_argv(
    qemu_binary: str, accelerator: Accelerator, machine: str, rom: Path, output: Path
) -> list[str]:
    """The QEMU command line that runs the probe guest (pure)."""
    machine_arg = f"{machine},x-option-roms=off" if machine == "microvm" else machine
    return [
        qemu_binary,
        # A probe must not pick up site configuration from /etc/qemu.
        "-no-user-config",
        "-nodefaults",
        "-display",
        "none",
        # A guest crash (triple fault) resets the machine; make that exit QEMU
        # instead of re-running the guest until the deadline.
        "-no-reboot",
        "-machine",
        machine_arg,
        *accel_args_for(accelerator, 1),
        "-smp",
        "1",
        "-m",
        str(_PROBE_MEMORY_MB),
        "-bios",
        str(rom),
        "-device",
        f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=2",
        "-chardev",
        f"file,id=probe,path={_qemu_opt_escape(str(output))}",
        "-device",
        f"isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=probe",
    ]


def run_probe_guest(
    runner: CommandRunner,
    *,
    qemu_binary: str,
    accelerator: Accelerator,
    machine: str,
    deadline: float,
    loops: int = DEFAULT_LOOPS,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeRun:
    """Run the probe guest once under ``accelerator`` and report what happened.

    Never raises for QEMU failures: they become ``outcome="failed"`` with the
    QEMU message in ``detail``. On timeout the runner kills QEMU (the
    :class:`~hangar.runner.CommandRunner` contract: a timed-out command raises
    :class:`HostCommandFailed` with return code -1 after the process is gone).
    The firmware and output files live in a private temporary folder that is
    removed before this returns.
    """
    with tempfile.TemporaryDirectory(prefix="hangar-probe-") as tmp:
        rom = Path(tmp) / "probe.rom"
        output = Path(tmp) / "debugcon.txt"
        rom.write_bytes(build_probe_rom(loops))
        argv = probe_argv(qemu_binary, accelerator, machine, rom, output)
        start = clock()
        try:
            result = runner.run(argv, check=False, timeout=deadline)
        except HostCommandFailed as exc:
            seconds = clock() - start
            if exc.returncode == -1:
                return ProbeRun(accelerator, "timeout", seconds, deadline)
            return ProbeRun(
                accelerator, "failed", seconds, deadline, detail=_first_error(str(exc.message))
            )
        seconds = clock() - start
        ticks = parse_probe_output(output.read_text(errors="replace")) if output.exists() else None
    if result.returncode == EXIT_STATUS:
        return ProbeRun(accelerator, "finished", seconds, deadline, ticks=ticks)
    return ProbeRun(
        accelerator,
        "failed",
        seconds,
        deadline,
        detail=describe_exit(result.returncode, result.stderr + result.stdout),
    )


def probe_accelerator(
    runner: CommandRunner,
    *,
    qemu_binary: str,
    machine: str,
    kvm_present: bool,
    kvm_device: str = "/dev/kvm",
    kvm_deadline: float = KVM_DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[AccelDecision, ProbeRun | None, ProbeRun | None]:
    """Probe TCG then KVM (only when the device is present) and decide.

    Returns the decision and the two runs (None when not run). TCG runs first so
    the KVM verdict can be compared with it; runs are sequential because two
    guests at once would slow each other down on a small host.
    """
    if not kvm_present:
        return decide_accelerator(False, None, None, kvm_device=kvm_device), None, None
    tcg = run_probe_guest(
        runner,
        qemu_binary=qemu_binary,
        accelerator="tcg",
        machine=machine,
        deadline=TCG_DEADLINE_S,
        clock=clock,
    )
    kvm = run_probe_guest(
        runner,
        qemu_binary=qemu_binary,
        accelerator="kvm",
        machine=machine,
        deadline=kvm_deadline,
        clock=clock,
    )
    return decide_accelerator(True, kvm, tcg, kvm_device=kvm_device), kvm, tcg


def describe_exit(returncode: int, output: str) -> str:
    """Explain a QEMU exit that was not the probe guest's own (pure)."""
    message = _first_error(output)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        head = f"QEMU was killed by {name}"
    elif returncode == 0:
        # With -no-reboot a guest reset (e.g. a triple fault) ends QEMU with 0.
        head = "the probe guest crashed (machine reset) before finishing"
    else:
        head = f"QEMU exited with status {returncode}"
    return f"{head}: {message}" if message else head


def _first_error(output: str) -> str:
    """The most telling line of QEMU's output: the first error, else the last line."""
    lines = [_strip_program(line) for line in output.splitlines() if line.strip()]
    # Drop the runner's own "host command failed ..." header if present.
    lines = [line for line in lines if not line.startswith("host command failed")]
    for line in lines:
        if "error" in line.lower() and not line.lower().startswith("warning"):
            return line
    return lines[-1] if lines else ""


def _strip_program(line: str) -> str:
    # QEMU prefixes its messages with its program name: "qemu-system-x86_64: ".
    head, sep, rest = line.partition(": ")
    if sep and head.startswith("qemu") and " " not in head:
        return rest.strip()
    return line.strip()


def _qemu_opt_escape(value: str) -> str:
    # QEMU option values escape a comma by doubling it.
    return value.replace(",", ",,")
