"""Unit tests for hangar.host: parsers on recorded outputs, the probe guest, the
accelerator decision, accelerator arguments and the probe cache (fake runner)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hangar.errors import HostCommandFailed
from hangar.host import cache
from hangar.host.accel import TCG_CPU_MODEL, accel_args, accel_args_for, tcg_tb_size_mib
from hangar.host.kvm import (
    ProbeRun,
    decide_accelerator,
    describe_exit,
    probe_accelerator,
    run_probe_guest,
)
from hangar.host.probe import (
    parse_machine_types,
    parse_meminfo_total,
    parse_qemu_version,
    parse_tsc_khz,
    probe_host,
    probe_machine,
)
from hangar.host.probe_guest import (
    DEFAULT_LOOPS,
    EXIT_STATUS,
    RESET_VECTOR_OFFSET,
    ROM_SIZE,
    build_probe_rom,
    parse_probe_output,
)
from hangar.runner import CommandResult
from hangar.spec.host import HostFacts
from tests.support.recording_runner import Call, ScriptedRunner

DATA = Path(__file__).resolve().parent.parent / "data" / "host"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# --- fake runner ---------------------------------------------------------------------


class FakeQemu(ScriptedRunner):
    """A command runner that answers like QEMU and records every argv.

    ``kvm``/``tcg`` say how the probe guest behaves under each accelerator:
    "finish" (prints ``ticks`` on debugcon, exits 85), "timeout", "abort"
    (the kvm_pvm MSR abort, recorded on this host) or "reset" (exit 0).
    """

    def __init__(
        self,
        *,
        kvm: str = "finish",
        tcg: str = "finish",
        kvm_ticks: int = 1_000_000,
        tcg_ticks: int = 150_000_000,
        version: str | None = None,
    ) -> None:
        super().__init__()
        self.behaviour = {"kvm": kvm, "tcg": tcg}
        self.ticks = {"kvm": kvm_ticks, "tcg": tcg_ticks}
        self.version = version if version is not None else recorded("qemu-version.txt")
        self.bios_sizes: list[int] = []

    def respond(self, call: Call) -> CommandResult:
        argv, cwd, timeout = call.argv, call.cwd, call.timeout  # noqa: F841
        args = argv
        if args[1:] == ("-version",):
            return CommandResult(args, 0, self.version, "")
        if args[1:] == ("-machine", "help"):
            return CommandResult(args, 0, recorded("machine-help.txt"), "")
        assert "-bios" in args, f"unexpected command {args}"
        self.bios_sizes.append(Path(args[args.index("-bios") + 1]).stat().st_size)
        accel = "kvm" if args[args.index("-accel") + 1] == "kvm" else "tcg"
        behaviour = self.behaviour[accel]
        if behaviour == "timeout":
            raise HostCommandFailed(list(args), -1, f"timed out after {timeout} s")
        if behaviour == "abort":
            return CommandResult(args, -6, "", recorded("kvm-pvm-cpu-host.stderr"))
        if behaviour == "reset":
            return CommandResult(args, 0, "", "")
        chardev = args[args.index("-chardev") + 1]
        out = Path(chardev.split("path=", 1)[1].replace(",,", ","))
        out.write_text(f"{self.ticks[accel]:016x}\n")
        return CommandResult(args, EXIT_STATUS, "", "")

    def probe_calls(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if "-bios" in c]


# --- parsers on recorded outputs -----------------------------------------------------


def test_parse_qemu_version_recorded() -> None:
    assert parse_qemu_version(recorded("qemu-version.txt")) == "7.2.22"


def test_parse_qemu_version_rejects_other_text() -> None:
    with pytest.raises(ValueError):
        parse_qemu_version("bash: qemu: command not found")


def test_parse_machine_types_recorded() -> None:
    machines = parse_machine_types(recorded("machine-help.txt"))
    assert machines[0] == "microvm"
    assert {"microvm", "pc", "q35", "pc-i440fx-7.2", "none"} <= set(machines)
    assert "Supported" not in machines
    assert len(machines) == len(set(machines))


def test_parse_machine_types_rejects_other_text() -> None:
    with pytest.raises(ValueError):
        parse_machine_types("qemu: invalid option")
    with pytest.raises(ValueError):
        parse_machine_types("Supported machines are:\n")


def test_parse_meminfo_total_recorded() -> None:
    assert parse_meminfo_total(recorded("meminfo.txt")) == 24684096 * 1024


def test_parse_meminfo_total_missing() -> None:
    with pytest.raises(ValueError):
        parse_meminfo_total("MemFree: 1 kB\n")


def test_parse_tsc_khz_recorded() -> None:
    # Recorded on a VM with invariant TSC, no aperfmperf, 2 CPUs at 2596.126 MHz.
    assert parse_tsc_khz(recorded("cpuinfo.txt")) == 2596126


def test_parse_tsc_khz_needs_invariant_tsc() -> None:
    text = recorded("cpuinfo.txt").replace(" constant_tsc", "")
    assert parse_tsc_khz(text) is None


def test_parse_tsc_khz_distrusts_measured_core_clock() -> None:
    # With aperfmperf the kernel reports the measured core clock, not the TSC.
    text = recorded("cpuinfo.txt").replace(" nonstop_tsc", " nonstop_tsc aperfmperf")
    assert parse_tsc_khz(text) is None


def test_parse_tsc_khz_distrusts_differing_cpus() -> None:
    text = recorded("cpuinfo.txt")
    first = text.index("cpu MHz")
    second = text.index("cpu MHz", first + 1)
    changed = text[:second] + text[second:].replace("2596.126", "1400.000", 1)
    assert parse_tsc_khz(changed) is None


def test_parse_tsc_khz_empty() -> None:
    assert parse_tsc_khz("") is None


def test_probe_machine_prefers_microvm_then_q35() -> None:
    assert probe_machine(parse_machine_types(recorded("machine-help.txt"))) == "microvm"
    assert probe_machine(("pc-q35-rhel9.2.0", "q35", "pc")) == "q35"
    assert probe_machine(("virt",)) == "virt"


# --- the probe guest -----------------------------------------------------------------


def test_probe_rom_follows_qemu_bios_rules() -> None:
    rom = build_probe_rom()
    # QEMU's -bios wants a non-zero multiple of 64 KiB; reset vector in the last 16 bytes.
    assert len(rom) == ROM_SIZE == 65536
    assert rom[RESET_VECTOR_OFFSET : RESET_VECTOR_OFFSET + 3] == bytes([0xE9, 0x0D, 0x00])
    assert rom[0] == 0xFA  # jmp lands on cli at offset 0


def test_probe_rom_patches_loop_count() -> None:
    a, b = build_probe_rom(1), build_probe_rom(DEFAULT_LOOPS)
    diff = [i for i in range(ROM_SIZE) if a[i] != b[i]]
    assert diff and all(0x98 <= i < 0x9C for i in diff)
    assert b[0x98:0x9C] == DEFAULT_LOOPS.to_bytes(4, "little")


@pytest.mark.parametrize("loops", [0, -1, 2**32])
def test_probe_rom_rejects_bad_loops(loops: int) -> None:
    with pytest.raises(ValueError):
        build_probe_rom(loops)


@pytest.mark.skipif(
    shutil.which("as") is None or shutil.which("objcopy") is None, reason="GNU binutils missing"
)
def test_probe_rom_matches_assembly_source() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        obj, binary = Path(tmp) / "g.o", Path(tmp) / "g.bin"
        subprocess.run(["as", "--32", "-o", str(obj), str(DATA / "probe_guest.S")], check=True)
        subprocess.run(
            ["objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True
        )
        assert build_probe_rom(0x12345678) == binary.read_bytes()


def test_parse_probe_output_recorded() -> None:
    assert parse_probe_output(recorded("tcg-debugcon.txt")) == 0x9EE98B8


def test_parse_probe_output_garbage() -> None:
    assert parse_probe_output("") is None
    assert parse_probe_output("0000\n") is None


# --- accelerator arguments -----------------------------------------------------------


def test_accel_args_tcg_single_vcpu() -> None:
    assert accel_args_for("tcg", 1) == ["-accel", "tcg,tb-size=32", "-cpu", TCG_CPU_MODEL]


def test_accel_args_tcg_smp_is_multithreaded() -> None:
    assert accel_args_for("tcg", 4) == [
        "-accel",
        "tcg,thread=multi,tb-size=32",
        "-cpu",
        TCG_CPU_MODEL,
    ]


def test_tcg_translation_cache_grows_with_the_guest() -> None:
    mib = 2**20
    assert tcg_tb_size_mib(None) == 32  # probe guests
    assert tcg_tb_size_mib(64 * mib) == 32
    assert tcg_tb_size_mib(128 * mib) == 32
    assert tcg_tb_size_mib(512 * mib) == 128
    assert tcg_tb_size_mib(1024 * mib) == 256
    assert tcg_tb_size_mib(16 * 1024 * mib) == 256
    assert accel_args_for("tcg", 1, 1024 * mib)[:2] == ["-accel", "tcg,tb-size=256"]
    assert accel_args_for("kvm", 1, 1024 * mib) == ["-accel", "kvm", "-cpu", "host"]


def test_accel_args_kvm() -> None:
    assert accel_args_for("kvm", 1) == ["-accel", "kvm", "-cpu", "host"]
    assert accel_args_for("kvm", 8) == ["-accel", "kvm", "-cpu", "host"]


def test_accel_args_from_facts() -> None:
    facts = HostFacts(
        qemu_binary="qemu-system-x86_64",
        qemu_version="7.2.22",
        machine_types=("microvm",),
        cpus=2,
        memory_bytes=1 << 30,
        accelerator="tcg",
        accelerator_reason="no /dev/kvm — using TCG",
        tsc_khz=None,
        kvm_device_present=False,
    )
    assert accel_args(facts, 2)[:2] == ["-accel", "tcg,thread=multi,tb-size=32"]
    assert accel_args(replace(facts, accelerator="kvm"), 2) == ["-accel", "kvm", "-cpu", "host"]


def test_accel_args_rejects_no_vcpus() -> None:
    with pytest.raises(ValueError):
        accel_args_for("tcg", 0)


# --- decision logic (pure) -----------------------------------------------------------

TCG_OK = ProbeRun("tcg", "finished", 0.09, 20.0, ticks=160_000_000)
KVM_FAST = ProbeRun("kvm", "finished", 0.05, 2.0, ticks=20_000_000)


def test_decide_no_device() -> None:
    decision = decide_accelerator(False, None, None)
    assert decision.accelerator == "tcg"
    assert decision.reason == "no /dev/kvm — using TCG"


def test_decide_working_kvm_is_chosen() -> None:
    decision = decide_accelerator(True, KVM_FAST, TCG_OK)
    assert decision.accelerator == "kvm"
    assert decision.reason.startswith("KVM works (probe 0.050 s")


def test_decide_kvm_timeout_means_tcg() -> None:
    kvm = ProbeRun("kvm", "timeout", 2.0, 2.0)
    decision = decide_accelerator(True, kvm, TCG_OK)
    assert decision.accelerator == "tcg"
    assert decision.reason == (
        "KVM: /dev/kvm present but unusable (probe guest did not finish in 2.0 s; "
        "TCG did it in 0.09 s) — using TCG"
    )


def test_decide_kvm_failure_names_flags_and_error() -> None:
    kvm = ProbeRun("kvm", "failed", 0.03, 2.0, detail="QEMU was killed by SIGABRT: boom")
    decision = decide_accelerator(True, kvm, TCG_OK)
    assert decision.accelerator == "tcg"
    assert "-accel kvm -cpu host" in decision.reason
    assert "SIGABRT: boom" in decision.reason
    assert decision.reason.endswith("— using TCG")


def test_decide_kvm_slower_than_tcg_means_tcg() -> None:
    # Finished within the deadline but did the work more slowly than TCG did.
    kvm = ProbeRun("kvm", "finished", 1.2, 2.0, ticks=3_000_000_000)
    decision = decide_accelerator(True, kvm, TCG_OK)
    assert decision.accelerator == "tcg"
    assert "slower under KVM" in decision.reason


def test_decide_compares_guest_ticks_not_startup() -> None:
    # KVM's QEMU took longer to start, but the guest's own work was faster.
    kvm = ProbeRun("kvm", "finished", 0.30, 2.0, ticks=20_000_000)
    assert decide_accelerator(True, kvm, TCG_OK).accelerator == "kvm"


def test_decide_falls_back_to_wall_time_without_ticks() -> None:
    kvm = ProbeRun("kvm", "finished", 0.5, 2.0)
    tcg = ProbeRun("tcg", "finished", 0.1, 20.0)
    assert decide_accelerator(True, kvm, tcg).accelerator == "tcg"
    assert decide_accelerator(True, replace(kvm, seconds=0.05), tcg).accelerator == "kvm"


def test_decide_kvm_without_tcg_comparison() -> None:
    tcg = ProbeRun("tcg", "failed", 0.02, 20.0, detail="no microvm")
    assert decide_accelerator(True, KVM_FAST, tcg).accelerator == "kvm"


def test_decide_both_failed_points_at_qemu() -> None:
    kvm = ProbeRun("kvm", "timeout", 2.0, 2.0)
    tcg = ProbeRun("tcg", "failed", 0.02, 20.0, detail="QEMU exited with status 1")
    decision = decide_accelerator(True, kvm, tcg)
    assert decision.accelerator == "tcg"
    assert "QEMU exited with status 1" in decision.reason
    assert "check the QEMU installation" in decision.reason


def test_describe_exit_recorded_pvm_abort() -> None:
    text = describe_exit(-6, recorded("kvm-pvm-cpu-host.stderr"))
    assert text == "QEMU was killed by SIGABRT: error: failed to set MSR 0x10a to 0x69"


def test_describe_exit_reset_and_status() -> None:
    assert "crashed" in describe_exit(0, "")
    assert describe_exit(1, "qemu-system-x86_64: -machine foo: unsupported machine type") == (
        "QEMU exited with status 1: -machine foo: unsupported machine type"
    )


def test_probe_run_json_round_trip() -> None:
    assert ProbeRun.from_json(KVM_FAST.to_json()) == KVM_FAST
    with pytest.raises(ValueError):
        ProbeRun.from_json({**KVM_FAST.to_json(), "outcome": "maybe"})


# --- running the probe guest with a fake runner --------------------------------------


def leftover_probe_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("hangar-probe-")}


@pytest.mark.parametrize(
    ("behaviour", "outcome", "ticks"),
    [("finish", "finished", 1_000_000), ("timeout", "timeout", None), ("abort", "failed", None)],
)
def test_run_probe_guest_outcomes(behaviour: str, outcome: str, ticks: int | None) -> None:
    before = leftover_probe_dirs()
    fake = FakeQemu(kvm=behaviour)
    run = run_probe_guest(
        fake, qemu_binary="qemu-system-x86_64", accelerator="kvm", machine="microvm", deadline=2.0
    )
    assert (run.outcome, run.ticks) == (outcome, ticks)
    assert run.deadline == 2.0
    (argv,) = fake.probe_calls()
    assert argv[argv.index("-accel") :][:4] == ("-accel", "kvm", "-cpu", "host")
    assert "microvm,x-option-roms=off" in argv
    assert fake.bios_sizes == [ROM_SIZE]
    assert leftover_probe_dirs() == before  # firmware and output removed


def test_run_probe_guest_reports_abort_message() -> None:
    run = run_probe_guest(
        FakeQemu(kvm="abort"),
        qemu_binary="qemu-system-x86_64",
        accelerator="kvm",
        machine="microvm",
        deadline=2.0,
    )
    assert "failed to set MSR 0x10a" in run.detail


def test_run_probe_guest_missing_binary() -> None:
    class Missing:
        def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
            raise HostCommandFailed(list(argv), 127, "[Errno 2] No such file or directory")

    run = run_probe_guest(
        Missing(), qemu_binary="nope", accelerator="tcg", machine="pc", deadline=1.0
    )
    assert run.outcome == "failed"
    assert "No such file" in run.detail


def test_probe_accelerator_runs_tcg_then_kvm() -> None:
    fake = FakeQemu()
    decision, kvm, tcg = probe_accelerator(
        fake, qemu_binary="qemu-system-x86_64", machine="microvm", kvm_present=True
    )
    assert decision.accelerator == "kvm"
    assert kvm is not None and tcg is not None
    accels = [c[c.index("-accel") + 1] for c in fake.probe_calls()]
    assert accels == ["tcg,tb-size=32", "kvm"]


def test_probe_accelerator_without_device_runs_nothing() -> None:
    fake = FakeQemu()
    decision, kvm, tcg = probe_accelerator(
        fake, qemu_binary="qemu-system-x86_64", machine="microvm", kvm_present=False
    )
    assert (decision.accelerator, kvm, tcg) == ("tcg", None, None)
    assert fake.calls == []


# --- probe_host and its cache --------------------------------------------------------


@pytest.fixture
def kvm_node(tmp_path: Path) -> Path:
    node = tmp_path / "kvm"
    node.write_text("")
    return node


def test_probe_host_without_kvm(tmp_path: Path) -> None:
    fake = FakeQemu()
    facts = probe_host(fake, cache_file=tmp_path / "c.json", kvm_device=tmp_path / "absent")
    assert facts.accelerator == "tcg"
    assert facts.accelerator_reason == f"no {tmp_path / 'absent'} — using TCG"
    assert not facts.kvm_device_present
    assert fake.probe_calls() == []
    assert facts.qemu_version == "7.2.22"
    assert "microvm" in facts.machine_types
    assert facts.cpus >= 1 and facts.memory_bytes > 0


def test_probe_host_with_working_kvm_caches(tmp_path: Path, kvm_node: Path) -> None:
    cache_file = tmp_path / "state" / "host-probe.json"
    first = probe_host(FakeQemu(), cache_file=cache_file, kvm_device=kvm_node)
    assert first.accelerator == "kvm"
    assert first.kvm_device_present
    data = json.loads(cache_file.read_text())
    assert data["format_version"] == cache.FORMAT_VERSION
    assert data["decision"]["accelerator"] == "kvm"
    assert data["key"]["kernel_release"] == os.uname().release

    again = FakeQemu(kvm="timeout")  # would say TCG if it were asked
    second = probe_host(again, cache_file=cache_file, kvm_device=kvm_node)
    assert again.probe_calls() == []
    assert second.accelerator == "kvm"
    assert second.accelerator_reason.startswith(first.accelerator_reason)
    assert "(cached probe from " in second.accelerator_reason


def test_probe_host_unusable_kvm(tmp_path: Path, kvm_node: Path) -> None:
    facts = probe_host(FakeQemu(kvm="abort"), cache_file=tmp_path / "c.json", kvm_device=kvm_node)
    assert facts.accelerator == "tcg"
    assert "failed to set MSR 0x10a" in facts.accelerator_reason


def test_cache_miss_on_other_qemu_version(tmp_path: Path, kvm_node: Path) -> None:
    cache_file = tmp_path / "c.json"
    probe_host(FakeQemu(), cache_file=cache_file, kvm_device=kvm_node)
    newer = FakeQemu(kvm="timeout", version="QEMU emulator version 8.2.0\n")
    facts = probe_host(newer, cache_file=cache_file, kvm_device=kvm_node)
    assert len(newer.probe_calls()) == 2
    assert facts.accelerator == "tcg"
    assert "did not finish in 2.0 s" in facts.accelerator_reason
    assert json.loads(cache_file.read_text())["decision"]["accelerator"] == "tcg"


def test_cache_miss_on_other_kvm_device(tmp_path: Path, kvm_node: Path) -> None:
    cache_file = tmp_path / "c.json"
    probe_host(FakeQemu(), cache_file=cache_file, kvm_device=kvm_node)
    kvm_node.unlink()
    kvm_node.write_text("")  # re-created node: new inode or ctime
    os.chmod(kvm_node, 0o600)
    fake = FakeQemu()
    probe_host(fake, cache_file=cache_file, kvm_device=kvm_node)
    assert len(fake.probe_calls()) == 2


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"format_version": 999}', '{"format_version": 1, "key": {}}'],
)
def test_bad_cache_means_probe_again(tmp_path: Path, kvm_node: Path, content: str) -> None:
    cache_file = tmp_path / "c.json"
    cache_file.write_text(content)
    fake = FakeQemu()
    assert probe_host(fake, cache_file=cache_file, kvm_device=kvm_node).accelerator == "kvm"
    assert len(fake.probe_calls()) == 2
    assert json.loads(cache_file.read_text())["format_version"] == cache.FORMAT_VERSION


def test_malformed_cache_with_matching_key_means_probe_again(
    tmp_path: Path, kvm_node: Path
) -> None:
    cache_file = tmp_path / "c.json"
    probe_host(FakeQemu(), cache_file=cache_file, kvm_device=kvm_node)
    data = json.loads(cache_file.read_text())
    data["decision"]["accelerator"] = "xen"
    cache_file.write_text(json.dumps(data))
    fake = FakeQemu()
    assert probe_host(fake, cache_file=cache_file, kvm_device=kvm_node).accelerator == "kvm"
    assert len(fake.probe_calls()) == 2


def test_unwritable_cache_does_not_stop_startup(tmp_path: Path, kvm_node: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    facts = probe_host(FakeQemu(), cache_file=blocker / "c.json", kvm_device=kvm_node)
    assert facts.accelerator == "kvm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "kvm"]


def test_no_cache_file_always_probes(kvm_node: Path) -> None:
    fake = FakeQemu()
    probe_host(fake, kvm_device=kvm_node)
    probe_host(fake, kvm_device=kvm_node)
    assert len(fake.probe_calls()) == 4


def test_probe_host_rejects_non_qemu(tmp_path: Path) -> None:
    with pytest.raises(HostCommandFailed) as info:
        probe_host(FakeQemu(version="GNU bash, version 5.2\n"), kvm_device=tmp_path / "absent")
    assert "QEMU" in info.value.hint


def test_tcg_model_offers_x86_64_v2() -> None:
    # Userlands built for x86-64-v2 must run: SSSE3, SSE4.1, SSE4.2 and POPCNT on top of qemu64.
    for feature in ("+ssse3", "+sse4.1", "+sse4.2", "+popcnt"):
        assert feature in TCG_CPU_MODEL.split(",")
