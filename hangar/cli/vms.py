"""VM commands: launch, list, info, power, delete, logs, console."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import click

from hangar.cli import console as console_cmd
from hangar.cli.app import F, cli, connect, emit_json, err, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.client.client import Client
from hangar.errors import InvalidInput, QemuFailed
from hangar.spec.forwards import parse_forward
from hangar.spec.units import format_size, parse_size


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
    with err.status(f"waiting for {shown(vm['name'])} to boot…"):
        try:
            client.wait_for_boot(vm["name"], vm["boot_marker"], seen=seen, timeout=timeout)
        except TimeoutError as exc:
            raise QemuFailed(str(exc), hint=f"see 'hangar logs {vm['name']}'") from exc


def _launch_words(words: tuple[str, ...], iso: str | None) -> tuple[str | None, str]:
    if len(words) == 2:
        return words[0], words[1]
    if len(words) == 1 and iso is not None:
        return None, words[0]
    raise InvalidInput(
        "launch takes IMAGE NAME (or just NAME with --iso)",
        hint="e.g. hangar launch debian-12 web, or hangar launch --iso FILE --disk 8G web",
    )


DEFAULT_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def read_ssh_keys(paths: tuple[str, ...]) -> list[str]:
    """The public keys of --ssh-key files, else the caller's first ~/.ssh/id_*.pub (if any).

    Only public halves are read; the server never sees a private key.
    """
    if not paths:
        found = [Path.home() / ".ssh" / n for n in DEFAULT_KEYS]
        paths = tuple(str(p) for p in found if p.is_file())[:1]
    keys = []
    for path in paths:
        text = Path(path).read_text().strip()
        if "PRIVATE KEY" in text:
            raise InvalidInput(
                f"{path} is a private key", hint="pass the public key (the .pub file)"
            )
        keys += [line for line in text.splitlines() if line.strip()]
    return keys


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
        ("boot", f"disk, {vm['firmware']}" if vm.get("firmware") else "direct kernel"),
        ("iso", vm.get("iso") or "-"),
        ("user", vm.get("user") or "-"),
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
@click.argument("words", nargs=-1, required=True, metavar="[IMAGE] NAME")
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
@click.option(
    "--firmware",
    type=click.Choice(["bios", "uefi"]),
    help="boot from the disk through SeaBIOS or OVMF (q35) instead of the image's kernel",
)
@click.option(
    "--iso",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    help="attach an installer ISO (a file on hangard's host) as a CD-ROM; no IMAGE: blank disk",
)
@click.option("--graphics/--no-graphics", default=None, help="a VGA display (default: with --iso)")
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="public key for the image's default user (default: ~/.ssh/id_*.pub); repeatable",
)
@click.option(
    "--cloud-init",
    "user_data",
    type=click.File("r"),
    help="cloud-init user-data file, passed to the guest unchanged",
)
@wait_option
@format_option
@handle_errors
def launch(
    words: tuple[str, ...],
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
    firmware: str | None,
    iso: str | None,
    graphics: bool | None,
    ssh_keys: tuple[str, ...],
    user_data: TextIO | None,
    wait: float | None,
    fmt: str,
) -> None:
    """Create VM NAME from IMAGE or template and start it.

    With --iso and no IMAGE, NAME gets a blank disk (--disk) to install onto.
    """
    image, name = _launch_words(words, iso)
    spec: dict[str, Any] = {"name": name}
    if image is not None:
        spec["image"] = image
    for key, value in (("firmware", firmware), ("iso", iso), ("graphics", graphics)):
        if value is not None:
            spec[key] = value
    keys = read_ssh_keys(ssh_keys)
    if keys:
        spec["ssh_keys"] = keys
    if user_data is not None:
        spec["user_data"] = user_data.read()
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
        parsed = [parse_forward(f) for f in forwards]
        nics.append({"type": "user", "forwards": parsed})
    fixed = _fixed_ips(networks, ips)
    nics += [{"type": "network", "network": n, "ip": fixed.get(n)} for n in networks]
    if forwards or networks:
        spec["nics"] = nics
    with connect() as client:
        # NAME-1 … NAME-N are made by hangard, in one request.
        launched = (
            [client.launch(spec, start=not no_start, full=full, cold=cold)]
            if count == 1
            else client.launch_many(spec, count, start=not no_start, full=full, cold=cold)
        )
        if wait is not None and not no_start:
            for vm in launched:
                _wait_for_boot(client, vm, seen=0, timeout=wait)
    if fmt == "json":
        emit_json(launched[0] if count == 1 else launched)
        return
    booted = " and booted" if wait is not None and not no_start else ""
    for vm in launched:
        out.print(
            f"VM [bold]{shown(vm['name'])}[/] is {shown(vm['state'])}{booted}", highlight=False
        )
    if count > 1:
        return
    vm = launched[0]
    for f in vm["forwards"]:
        if f["guest_port"] == 80 and f["protocol"] == "tcp":
            address = shown(f"{f['host_address']}:{f['host_port']}")
            out.print(f"  web:     http://{address}/", highlight=False)
    label = shown(name)
    if vm.get("user"):
        out.print(
            f"  shell:   hangar shell {label}   (SSH as {shown(vm['user'])})", highlight=False
        )
    if vm.get("graphics"):
        out.print(f"  screen:  hangar screenshot {label} screen.png", highlight=False)
    out.print(f"  console: hangar console {label}   (detach with Ctrl-])", highlight=False)
    out.print(f"  logs:    hangar logs {label} --follow", highlight=False)


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
        guest = client.guest_info(name) if vm.get("agent") and vm["state"] == "running" else None
    if fmt == "json":
        emit_json({**vm, "guest": guest})
        return
    print_vm(vm)
    if guest is not None and guest.get("agent"):
        addresses = ", ".join(f"{a['address']}/{a['prefix']}" for a in guest["addresses"])
        # The agent's answers are the guest's to choose: hostname and OS are any text.
        out.print(
            f"[bold]guest[/]  {shown(guest['os'])} ({shown(guest['kernel'])}), hostname "
            f"{shown(guest['hostname'])}, addresses {shown(addresses or '-')}",
            highlight=False,
        )
    elif guest is not None:
        out.print(f"[bold]guest[/]  agent not answering: {shown(guest['reason'])}", highlight=False)


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
            out.print(f"VM [bold]{shown(vm['name'])}[/] is {shown(vm['state'])}", highlight=False)


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
        out.print(
            f"VM [bold]{shown(vm['name'])}[/] is {shown(vm['state'])}{booted}", highlight=False
        )


_power_command("pause", "Pause a running VM (its vCPUs stop; memory stays).")
_power_command("resume", "Resume a paused VM.")

_METHODS = {
    "acpi": "the guest shut down after the ACPI power button",
    "agent": "the guest ignored the ACPI power button and shut down when its agent asked",
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
        how = shown(_METHODS.get(result["method"], result["method"]))
        out.print(
            f"VM [bold]{shown(vm['name'])}[/] is {shown(vm['state'])} ({how})", highlight=False
        )


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
    out.print(f"VM [bold]{shown(name)}[/] deleted", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="keep printing new output")
@click.option("--lines", "-n", type=int, default=100, show_default=True)
@handle_errors
def logs(name: str, follow: bool, lines: int) -> None:
    """Print a VM's serial console output."""
    # As the console does: the guest's output goes to the terminal as the guest wrote it
    # (its escape sequences included), the one place that is what the user asks for.
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
