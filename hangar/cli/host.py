"""Host commands."""

from __future__ import annotations

from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table
from hangar.spec.units import format_size


@cli.group()
def host() -> None:
    """The host hangard runs on."""


@host.command(name="info")
@format_option
@handle_errors
def host_info(fmt: str) -> None:
    """Show QEMU, CPUs, memory and the accelerator chosen (and why)."""
    with connect() as client:
        facts = client.host_info()
    if fmt == "json":
        emit_json(facts)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("hangar", facts["hangar_version"])
    table.add_row("qemu", f"{facts['qemu_version']} ({facts['qemu_binary']})")
    table.add_row("accelerator", facts["accelerator"])
    table.add_row("why", facts["accelerator_reason"])
    table.add_row("cpus", str(facts["cpus"]))
    table.add_row("memory", format_size(facts["memory_bytes"]))
    table.add_row("/dev/kvm", "present" if facts["kvm_device_present"] else "absent")
    table.add_row("tsc", f"{facts['tsc_khz']} kHz" if facts["tsc_khz"] else "unknown")
    # Versioned aliases (pc-q35-7.1, ...) are noise here; --format json lists them all.
    main = [m for m in facts["machine_types"] if not any(ch.isdigit() for ch in m)]
    table.add_row("machines", ", ".join(main) + f" (+{len(facts['machine_types']) - len(main)})")
    out.print(table, highlight=False)
