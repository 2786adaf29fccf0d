"""VM commands: launch, list, info, power, delete, logs, console."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from hangar.cli import console as console_cmd
from hangar.cli.app import F, cli, connect, emit_json, err, format_option, handle_errors, out
from hangar.client.client import Client
from hangar.errors import InvalidInput, QemuFailed
from hangar.spec.units import format_size, parse_size
from hangar.spec.vm import PortForward


def wait_option(fn: F) -> F:
    return click.option(
        "--wait",
        type=float,
        is_flag=False,
        flag_value=120.0,
        default=None,
        metavar="[SECONDS]",
        help="wait until the guest has booted (its image's boot marker), up to 120 s",
    )(fn)


def _wait_for_boot(client: Client, vm: dict[str, Any], *, seen: int, timeout: float) -> None:
    with err.status(f"waiting for {vm['name']} to boot…"):
        try:
            client.wait_for_boot(vm["name"], vm["boot_marker"], seen=seen, timeout=timeout)
        except TimeoutError as exc:
            raise QemuFailed(str(exc), hint=f"see 'hangar logs {vm['name']}'") from exc


def _forwards(vm: dict[str, Any]) -> str:
    return ", ".join(
        f"{f['host_address']}:{f['host_port']}->{f['guest_port']}/{f['protocol']}"
        for f in vm.get("forwards", [])
    )


def print_vm(vm: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("name", vm["name"]),
        ("state", vm["state"]),
        ("reason", vm["state_reason"] or "-"),
        ("image", vm["image"]),
        ("cpus", str(vm["cpus"])),
        ("memory", format_size(vm["memory"])),
        ("disk", format_size(vm["disk_size"])),
        ("machine", f"{vm['machine']} ({vm['accelerator']})"),
        ("pid", str(vm["pid"] or "-")),
        ("mac", ", ".join(vm["macs"])),
        ("addresses", _addresses(vm) or "-"),
        ("forwards", _forwards(vm) or "-"),
        ("serial log", vm["serial_log"]),
        ("id", vm["id"]),
        ("created", vm["created_at"]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table, highlight=False)


@cli.command()
@click.argument("image")
@click.argument("name")
@click.option("--cpus", type=int, help="virtual CPUs (default: the image's)")
@click.option("--memory", help="memory, e.g. 256M or 1G (default: the image's)")
@click.option("--disk", help="root disk size, e.g. 2G (default: the image's)")
@click.option(
    "--forward",
    "forwards",
    multiple=True,
    metavar="HOSTPORT:GUESTPORT",
    help="forward 127.0.0.1:HOSTPORT to the guest's port (repeatable; /udp for UDP)",
)
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="NAME",
    help="attach a NIC to virtual network NAME (repeatable: one NIC each)",
)
@click.option(
    "--ip",
    "ips",
    multiple=True,
    metavar="[NETWORK=]ADDRESS",
    help="fixed address on a network (plain ADDRESS: the first --network)",
)
@click.option("--no-start", is_flag=True, help="create the VM but do not start it")
@click.option(
    "--count",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="deploy N VMs named NAME-1 … NAME-N",
)
@click.option(
    "--full", is_flag=True, help="give each VM an independent copy of the disk (default: linked)"
)
@click.option(
    "--machine",
    type=click.Choice(["microvm", "q35"]),
    help="microvm (default, fastest boot) or q35 (PCIe: volumes attach while it runs)",
)
@click.option("--cold", is_flag=True, help="boot a warm template instead of resuming its guest")
@wait_option
@format_option
@handle_errors
def launch(
    image: str,
    name: str,
    cpus: int | None,
    memory: str | None,
    disk: str | None,
    forwards: tuple[str, ...],
    networks: tuple[str, ...],
    ips: tuple[str, ...],
    no_start: bool,
    count: int,
    full: bool,
    machine: str | None,
    cold: bool,
    wait: float | None,
    fmt: str,
) -> None:
    """Create VM NAME from IMAGE or template and start it."""
    spec: dict[str, Any] = {"name": name, "image": image}
    if cpus is not None:
        spec["cpus"] = cpus
    if memory is not None:
        spec["memory"] = parse_size(memory, what="--memory")
    if disk is not None:
        spec["disk"] = parse_size(disk, what="--disk")
    if machine is not None:
        spec["machine"] = machine
    if forwards and count > 1:
        raise InvalidInput("--forward with --count", hint="a host port serves only one VM")
    if ips and count > 1:
        raise InvalidInput("--ip with --count", hint="an address serves only one VM")
    nics: list[dict[str, Any]] = []
    if forwards or not networks:
        parsed = [PortForward.parse(f).model_dump() for f in forwards]
        nics.append({"type": "user", "forwards": parsed})
    fixed = _fixed_ips(networks, ips)
    nics += [{"type": "network", "network": n, "ip": fixed.get(n)} for n in networks]
    if forwards or networks:
        spec["nics"] = nics
    names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
    launched = []
    with connect() as client:
        for vm_name in names:
            launched.append(
                client.launch({**spec, "name": vm_name}, start=not no_start, full=full, cold=cold)
            )
        if wait is not None and not no_start:
            for vm in launched:
                _wait_for_boot(client, vm, seen=0, timeout=wait)
    if fmt == "json":
        emit_json(launched[0] if count == 1 else launched)
        return
    booted = " and booted" if wait is not None and not no_start else ""
    for vm in launched:
        out.print(f"VM [bold]{vm['name']}[/] is {vm['state']}{booted}", highlight=False)
    if count > 1:
        return
    vm = launched[0]
    for f in vm["forwards"]:
        if f["guest_port"] == 80 and f["protocol"] == "tcp":
            out.print(f"  web:     http://{f['host_address']}:{f['host_port']}/", highlight=False)
    out.print(f"  console: hangar console {name}   (detach with Ctrl-])", highlight=False)
    out.print(f"  logs:    hangar logs {name} --follow", highlight=False)


def _fixed_ips(networks: tuple[str, ...], ips: tuple[str, ...]) -> dict[str, str]:
    fixed: dict[str, str] = {}
    for item in ips:
        network, sep, address = item.rpartition("=")
        if not sep:
            if not networks:
                raise InvalidInput("--ip needs a --network", hint="add --network NAME")
            network = networks[0]
        if network not in networks:
            raise InvalidInput(
                f"--ip {item} names network '{network}', which has no --network",
                hint=f"add --network {network}",
            )
        fixed[network] = address
    return fixed


def _address(a: dict[str, Any]) -> str:
    ip = a["ip"] or "dhcp"
    pending = " (no lease yet)" if a["ip"] and not a["leased"] else ""
    return f"{ip}{pending} on {a['network']}"


def _addresses(vm: dict[str, Any]) -> str:
    return ", ".join(_address(a) for a in vm.get("addresses", []))


@cli.command(name="list")
@click.option("--all-projects", is_flag=True, help="VMs of every project (host administrator)")
@format_option
@handle_errors
def list_vms(all_projects: bool, fmt: str) -> None:
    """List VMs with their state (of one project: --project, default 'default')."""
    with connect() as client:
        vms = client.vms(all_projects=all_projects)
    if fmt == "json":
        emit_json(vms)
        return
    table = Table()
    columns = ["NAME", "STATE", "IMAGE", "CPUS", "MEMORY", "DISK", "ADDRESSES", "FORWARDS"]
    for column in (["PROJECT"] if all_projects else []) + columns:
        table.add_column(column)
    for vm in vms:
        table.add_row(
            *([vm["project"]] if all_projects else []),
            vm["name"],
            vm["state"],
            vm["image"],
            str(vm["cpus"]),
            format_size(vm["memory"]),
            format_size(vm["disk_size"]),
            _addresses(vm),
            _forwards(vm),
        )
    out.print(table, highlight=False)


@cli.command()
@click.argument("name")
@format_option
@handle_errors
def info(name: str, fmt: str) -> None:
    """Show one VM in detail."""
    with connect() as client:
        vm = client.vm(name)
    if fmt == "json":
        emit_json(vm)
    else:
        print_vm(vm)


def _power_command(action: str, doc: str) -> None:
    @cli.command(name=action, help=doc)
    @click.argument("name")
    @format_option
    @handle_errors
    def command(name: str, fmt: str) -> None:
        with connect() as client:
            vm = getattr(client, action)(name)
        if fmt == "json":
            emit_json(vm)
        else:
            out.print(f"VM [bold]{vm['name']}[/] is {vm['state']}", highlight=False)


@cli.command()
@click.argument("name")
@wait_option
@format_option
@handle_errors
def start(name: str, wait: float | None, fmt: str) -> None:
    """Start a stopped VM."""
    with connect() as client:
        before = client.vm(name)
        seen = client.boot_count(name, before["boot_marker"]) if wait is not None else 0
        vm = client.start(name)
        if wait is not None:
            _wait_for_boot(client, vm, seen=seen, timeout=wait)
    if fmt == "json":
        emit_json(vm)
    else:
        booted = " and booted" if wait is not None else ""
        out.print(f"VM [bold]{vm['name']}[/] is {vm['state']}{booted}", highlight=False)


_power_command("pause", "Pause a running VM (its vCPUs stop; memory stays).")
_power_command("resume", "Resume a paused VM.")

_METHODS = {
    "acpi": "the guest shut down after the ACPI power button",
    "forced": "forced off",
    "forced-after-timeout": "forced off: the guest ignored the ACPI power button",
}


def _stop_like(action: str, doc: str) -> None:
    @cli.command(name=action, help=doc)
    @click.argument("name")
    @click.option("--force", is_flag=True, help="do not ask the guest; turn it off at once")
    @click.option(
        "--timeout", type=float, default=30.0, show_default=True, help="seconds to wait for ACPI"
    )
    @format_option
    @handle_errors
    def command(name: str, force: bool, timeout: float, fmt: str) -> None:
        with connect() as client:
            result = getattr(client, action)(name, force=force, timeout=timeout)
        if fmt == "json":
            emit_json(result)
            return
        vm = result["vm"]
        how = _METHODS.get(result["method"], result["method"])
        out.print(f"VM [bold]{vm['name']}[/] is {vm['state']} ({how})", highlight=False)


_stop_like("stop", "Stop a VM: ACPI shutdown, forced after --timeout seconds.")
_stop_like("restart", "Restart a VM: stop it (as 'stop' does) and start it again.")


@cli.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="stop the VM first if it is running")
@handle_errors
def delete(name: str, force: bool) -> None:
    """Delete a VM and all its files."""
    with connect() as client:
        client.delete(name, force=force)
    out.print(f"VM [bold]{name}[/] deleted", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="keep printing new output")
@click.option("--lines", "-n", type=int, default=100, show_default=True)
@handle_errors
def logs(name: str, follow: bool, lines: int) -> None:
    """Print a VM's serial console output."""
    with connect() as client:
        if not follow:
            click.echo(client.logs(name, lines=lines), nl=False)
            return
        try:
            with client.follow_logs(name, lines=lines) as chunks:
                for chunk in chunks:
                    click.echo(chunk, nl=False)
        except KeyboardInterrupt:
            pass


@cli.command()
@click.argument("name")
@handle_errors
def console(name: str) -> None:
    """Attach to a VM's serial console (detach with Ctrl-])."""
    with connect() as client:
        console_cmd.attach(client, name)
