"""The accelerator probe against real QEMU on this host."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from hangar.host.kvm import probe_accelerator, run_probe_guest
from hangar.host.probe import probe_host
from hangar.runner import SubprocessRunner

pytestmark = pytest.mark.qemu

QEMU = "qemu-system-x86_64"
KVM = Path("/dev/kvm")


def leftover_probe_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("hangar-probe-")}


def probe_qemu_pids() -> set[int]:
    """Probe QEMUs that this test process started and that are still around.

    Only our own children count, so a probe run by a concurrent test elsewhere
    on the host cannot make this fail.
    """
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"hangar-probe-" in cmdline:
            pids.add(int(entry.name))
    return pids


@pytest.mark.parametrize("machine", ["microvm", "pc"])
def test_tcg_runs_the_probe_guest(machine: str) -> None:
    run = run_probe_guest(
        SubprocessRunner(), qemu_binary=QEMU, accelerator="tcg", machine=machine, deadline=20.0
    )
    assert run.outcome == "finished", run.detail
    assert run.ticks is not None and run.ticks > 0


def test_timeout_kills_qemu_and_leaves_nothing() -> None:
    before = leftover_probe_dirs()
    # ~4 billion iterations: minutes under TCG, far past the deadline.
    run = run_probe_guest(
        SubprocessRunner(),
        qemu_binary=QEMU,
        accelerator="tcg",
        machine="microvm",
        deadline=0.5,
        loops=2**32 - 1,
    )
    assert run.outcome == "timeout"
    assert probe_qemu_pids() == set()
    assert leftover_probe_dirs() == before


def test_probe_decides_with_a_reason() -> None:
    before = leftover_probe_dirs()
    decision, kvm, tcg = probe_accelerator(
        SubprocessRunner(), qemu_binary=QEMU, machine="microvm", kvm_present=KVM.exists()
    )
    assert decision.accelerator in ("kvm", "tcg")
    assert decision.reason
    if KVM.exists():
        assert tcg is not None and tcg.outcome == "finished", tcg
        assert kvm is not None
    assert leftover_probe_dirs() == before
    assert probe_qemu_pids() == set()


@pytest.mark.skipif(not Path("/sys/module/kvm_pvm").exists(), reason="only on a host with kvm_pvm")
def test_pagetable_kvm_is_rejected() -> None:
    decision, _, tcg = probe_accelerator(
        SubprocessRunner(), qemu_binary=QEMU, machine="microvm", kvm_present=True
    )
    assert decision.accelerator == "tcg"
    assert "present but unusable" in decision.reason
    assert tcg is not None and tcg.outcome == "finished"


def test_probe_host_caches_the_verdict(tmp_path: Path) -> None:
    cache_file = tmp_path / "host-probe.json"
    first = probe_host(SubprocessRunner(), cache_file=cache_file)
    assert first.qemu_version
    assert "microvm" in first.machine_types
    assert first.cpus >= 1 and first.memory_bytes > 0
    assert first.kvm_device_present == KVM.exists()
    second = probe_host(SubprocessRunner(), cache_file=cache_file)
    assert second.accelerator == first.accelerator
    if KVM.exists():
        assert cache_file.exists()
        assert "(cached probe from " in second.accelerator_reason
