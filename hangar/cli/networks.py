"""Network commands: network create/list/show/delete, forward add/list/delete, firewall."""

from __future__ import annotations

from typing import Any

import click

from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.errors import InvalidInput


@cli.group()
def network() -> None:
    """Virtual networks: nat, isolated (host-only) and bridged."""


@network.command(name="create")
@click.argument("name")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["nat", "isolated", "bridged"]),
    default="nat",
    show_default=True,
)
@click.option("--subnet", help="IPv4 subnet, e.g. 10.77.5.0/24 (default: a free 10.77.N.0/24)")
@click.option(
    "--uplink",
    help="nat: the interface traffic leaves by; bridged: the existing host bridge to join",
)
@click.option(
    "--default-inbound",
    type=click.Choice(["allow", "deny"]),
    default="allow",
    show_default=True,
    help="what reaches a guest when none of its firewall rules match",
)
@click.option("--host-access", is_flag=True, help="isolated: guests may reach the host itself")
@format_option
@handle_errors
def create(
    name: str,
    kind: str,
    subnet: str | None,
    uplink: str | None,
    default_inbound: str,
    host_access: bool,
    fmt: str,
) -> None:
    """Create network NAME."""
    spec: dict[str, Any] = {
        "name": name,
        "type": kind,
        "default_inbound": default_inbound,
        "host_access": host_access,
    }
    if subnet:
        spec["subnet"] = subnet
    if uplink:
        spec["uplink"] = uplink
    with connect() as client:
        view = client.create_network(spec)
    if fmt == "json":
        emit_json(view)
        return
    cfg = view["config"]
    where = shown(f" {cfg['subnet']}" if cfg["subnet"] else f" on {cfg['bridge']}")
    out.print(
        f"network [bold]{shown(name)}[/] ({shown(cfg['type'])}{where}) created", highlight=False
    )


@network.command(name="list")
@format_option
@handle_errors
def list_networks(fmt: str) -> None:
    """List networks."""
    with connect() as client:
        views = client.networks()
    if fmt == "json":
        emit_json(views)
        return
    table = Table()
    for column in ("NAME", "TYPE", "SUBNET", "BRIDGE", "UPLINK", "INBOUND", "VMS"):
        table.add_column(column)
    for v in views:
        c = v["config"]
        table.add_row(
            c["name"],
            c["type"],
            c["subnet"] or "-",
            c["bridge"],
            c["uplink"] or "-",
            c["default_inbound"],
            ", ".join(v["vms"]) or "-",
        )
    out.print(table, highlight=False)


@network.command()
@click.argument("name")
@format_option
@handle_errors
def show(name: str, fmt: str) -> None:
    """Show one network in detail."""
    with connect() as client:
        v = client.network(name)
    if fmt == "json":
        emit_json(v)
        return
    c = v["config"]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("name", c["name"]),
        ("type", c["type"]),
        ("subnet", c["subnet"] or "-"),
        ("gateway", c["gateway"] or "-"),
        ("bridge", c["bridge"]),
        ("uplink", c["uplink"] or "-"),
        ("default inbound", c["default_inbound"]),
        ("peers", ", ".join(c.get("peers", [])) or "-"),
        ("dnsmasq pid", str(v["dnsmasq_pid"] or "-")),
        ("vms", ", ".join(v["vms"]) or "-"),
        ("forwards", ", ".join(_forward(f) for f in v["forwards"]) or "-"),
        ("id", c["id"]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table, highlight=False)


@network.command()
@click.argument("name")
@handle_errors
def delete(name: str) -> None:
    """Delete a network no VM uses."""
    with connect() as client:
        client.delete_network(name)
    out.print(f"network [bold]{shown(name)}[/] deleted", highlight=False)


@network.command()
@click.argument("vm")
@click.argument("name")
@click.option("--ip", help="a fixed address on the network (default: the lowest free one)")
@handle_errors
def attach(vm: str, name: str, ip: str | None) -> None:
    """Attach stopped VM to network NAME (a new NIC; no hotplug on microvm)."""
    with connect() as client:
        view = client.attach_nic(vm, name, ip)
    addr = next((a["ip"] for a in view["addresses"] if a["network"] == name), None)
    out.print(
        f"VM [bold]{shown(vm)}[/] attached to {shown(name)}"
        + (f" as {shown(addr)}" if addr else ""),
        highlight=False,
    )


@network.command()
@click.argument("vm")
@click.argument("name")
@handle_errors
def detach(vm: str, name: str) -> None:
    """Detach stopped VM from network NAME."""
    with connect() as client:
        client.detach_nic(vm, name)
    out.print(f"VM [bold]{shown(vm)}[/] detached from {shown(name)}", highlight=False)


@network.command()
@click.argument("name")
@click.argument("other")
@handle_errors
def peer(name: str, other: str) -> None:
    """Let guests of networks NAME and OTHER reach each other."""
    with connect() as client:
        client.peer_networks(name, other)
    out.print(
        f"networks [bold]{shown(name)}[/] and [bold]{shown(other)}[/] are peered", highlight=False
    )


@network.command()
@click.argument("name")
@click.argument("other")
@handle_errors
def unpeer(name: str, other: str) -> None:
    """Isolate networks NAME and OTHER from each other again."""
    with connect() as client:
        client.peer_networks(name, other, peered=False)
    out.print(
        f"networks [bold]{shown(name)}[/] and [bold]{shown(other)}[/] are isolated",
        highlight=False,
    )


# --- forwards ---------------------------------------------------------------------


def _forward(f: dict[str, Any]) -> str:
    host = "*" if f["host_address"] == "0.0.0.0" else f["host_address"]
    return f"{host}:{f['host_port']}->{f['vm']}:{f['vm_port']}/{f['protocol']}"


def _parse_host(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not port.isdigit():
        raise InvalidInput(f"'{text}' is not [HOST_IP:]PORT", hint="e.g. 8080 or 192.0.2.1:8080")
    return address or "0.0.0.0", int(port)


def _parse_target(text: str) -> tuple[str, int]:
    vm, _, port = text.rpartition(":")
    if not vm or not port.isdigit():
        raise InvalidInput(f"'{text}' is not VM:PORT", hint="e.g. web:80")
    return vm, int(port)


@cli.group()
def forward() -> None:
    """Port forwards from the host into VMs on nat networks."""


@forward.command(name="add")
@click.argument("network_name", metavar="NETWORK")
@click.argument("host", metavar="[HOST_IP:]PORT")
@click.argument("target", metavar="VM:PORT")
@click.option("--udp", is_flag=True, help="forward UDP instead of TCP")
@format_option
@handle_errors
def forward_add(network_name: str, host: str, target: str, udp: bool, fmt: str) -> None:
    """Forward [HOST_IP:]PORT on the host to VM:PORT on NETWORK."""
    address, port = _parse_host(host)
    vm, vm_port = _parse_target(target)
    spec = {
        "host_address": address,
        "host_port": port,
        "vm": vm,
        "vm_port": vm_port,
        "protocol": "udp" if udp else "tcp",
    }
    with connect() as client:
        f = client.add_forward(network_name, spec)
    if fmt == "json":
        emit_json(f)
    else:
        out.print(f"forward {shown(f['id'])}: {shown(_forward(f))} added", highlight=False)


@forward.command(name="list")
@click.option("--network", "network_name", help="only this network's forwards")
@format_option
@handle_errors
def forward_list(network_name: str | None, fmt: str) -> None:
    """List port forwards."""
    with connect() as client:
        forwards = client.forwards(network_name)
    if fmt == "json":
        emit_json(forwards)
        return
    table = Table()
    for column in ("ID", "NETWORK", "HOST", "VM", "VM ADDRESS"):
        table.add_column(column)
    for f in forwards:
        host = "*" if f["host_address"] == "0.0.0.0" else f["host_address"]
        table.add_row(
            str(f["id"]),
            f["network"],
            f"{host}:{f['host_port']}/{f['protocol']}",
            f"{f['vm']}:{f['vm_port']}",
            f"{f['vm_ip']}:{f['vm_port']}",
        )
    out.print(table, highlight=False)


@forward.command(name="delete")
@click.argument("forward_id", type=int, metavar="ID")
@handle_errors
def forward_delete(forward_id: int) -> None:
    """Delete port forward ID."""
    with connect() as client:
        client.delete_forward(forward_id)
    out.print(f"forward {shown(forward_id)} deleted", highlight=False)


# --- firewall -----------------------------------------------------------------------


@cli.group()
def firewall() -> None:
    """Per-VM firewall rules (evaluated in the order they were added)."""


@firewall.command(name="add")
@click.argument("vm")
@click.argument("action", type=click.Choice(["allow", "deny"]))
@click.argument("direction", type=click.Choice(["in", "out"]))
@click.option("--protocol", type=click.Choice(["tcp", "udp", "icmp", "any"]), default="any")
@click.option("--port", type=int, help="destination port (needs --protocol tcp or udp)")
@click.option("--cidr", help="peer addresses: the source for 'in', the destination for 'out'")
@format_option
@handle_errors
def firewall_add(
    vm: str,
    action: str,
    direction: str,
    protocol: str,
    port: int | None,
    cidr: str | None,
    fmt: str,
) -> None:
    """Add a rule: VM allow|deny in|out [--protocol P] [--port N] [--cidr C]."""
    spec: dict[str, Any] = {
        "vm": vm,
        "action": action,
        "direction": direction,
        "protocol": protocol,
    }
    if port is not None:
        spec["port"] = port
    if cidr:
        spec["cidr"] = cidr
    with connect() as client:
        rule = client.add_firewall_rule(spec)
    if fmt == "json":
        emit_json(rule)
    else:
        out.print(f"firewall rule {shown(rule['id'])} added", highlight=False)


@firewall.command(name="list")
@click.option("--vm", help="only this VM's rules")
@format_option
@handle_errors
def firewall_list(vm: str | None, fmt: str) -> None:
    """List firewall rules."""
    with connect() as client:
        rules = client.firewall_rules(vm)
    if fmt == "json":
        emit_json(rules)
        return
    table = Table()
    for column in ("ID", "VM", "DIRECTION", "ACTION", "PROTOCOL", "PORT", "CIDR"):
        table.add_column(column)
    for r in rules:
        table.add_row(
            str(r["id"]),
            r["vm"],
            r["direction"],
            r["action"],
            r["protocol"],
            str(r["port"] or "-"),
            r["cidr"] or "-",
        )
    out.print(table, highlight=False)


@firewall.command(name="delete")
@click.argument("rule_id", type=int, metavar="ID")
@handle_errors
def firewall_delete(rule_id: int) -> None:
    """Delete firewall rule ID."""
    with connect() as client:
        client.delete_firewall_rule(rule_id)
    out.print(f"firewall rule {shown(rule_id)} deleted", highlight=False)
