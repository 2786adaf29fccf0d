"""Project commands: tenants and their quotas."""

from __future__ import annotations

from typing import Any

import click

from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.errors import InvalidInput
from hangar.spec.units import format_size, parse_size

QUOTAS = {
    "max-instances": ("max_instances", False),
    "max-cpus": ("max_cpus", False),
    "max-memory": ("max_memory", True),
    "max-disk": ("max_disk", True),
}
UNLIMITED = ("none", "unlimited", "")


def parse_quotas(pairs: tuple[str, ...]) -> dict[str, int | None]:
    """``max-memory=1G`` ... into API quota fields; ``=none`` removes a limit."""
    quotas: dict[str, int | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in QUOTAS:
            raise InvalidInput(
                f"'{pair}' is not a quota setting",
                hint=f"use KEY=VALUE, KEY one of: {', '.join(QUOTAS)}",
            )
        field, is_size = QUOTAS[key]
        if value.lower() in UNLIMITED:
            quotas[field] = None
        elif is_size:
            quotas[field] = parse_size(value, what=key)
        elif value.isdigit():
            quotas[field] = int(value)
        else:
            raise InvalidInput(f"{key} wants a whole number, got '{value}'")
    return quotas


def _limit(value: int | None, size: bool) -> str:
    if value is None:
        return "-"
    return format_size(value) if size else str(value)


def print_project(project: dict[str, Any]) -> None:
    table = Table(show_header=True, box=None)
    for column in ("", "USED", "LIMIT"):
        table.add_column(column)
    quotas, usage = project["quotas"], project["usage"]
    for key, (field, size) in QUOTAS.items():
        used = usage[field.removeprefix("max_")]
        table.add_row(
            key.removeprefix("max-"),
            format_size(used) if size else str(used),
            _limit(quotas[field], size),
        )
    out.print(
        f"project [bold]{shown(project['name'])}[/] {shown(project['description'])}",
        highlight=False,
    )
    out.print(table, highlight=False)


@cli.group()
def project() -> None:
    """Projects (tenants) with quotas."""


@project.command(name="create")
@click.argument("name")
@click.argument("quotas", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--description", default="")
@handle_errors
def project_create(name: str, quotas: tuple[str, ...], description: str) -> None:
    """Create project NAME with quotas (max-instances=2 max-memory=1G ...); limits not given
    take the defaults (max-instances 10, max-cpus 16, max-memory 32G, max-disk 200G)."""
    with connect() as client:
        client.create_project(name, description, parse_quotas(quotas))
    out.print(f"project [bold]{shown(name)}[/] created", highlight=False)


@project.command(name="list")
@format_option
@handle_errors
def project_list(fmt: str) -> None:
    """List projects with their use and limits."""
    with connect() as client:
        projects = client.projects()
    if fmt == "json":
        emit_json(projects)
        return
    table = Table()
    for column in ("NAME", "INSTANCES", "CPUS", "MEMORY", "DISK", "DESCRIPTION"):
        table.add_column(column)
    for p in projects:
        q, u = p["quotas"], p["usage"]
        table.add_row(
            p["name"],
            f"{u['instances']}/{_limit(q['max_instances'], False)}",
            f"{u['cpus']}/{_limit(q['max_cpus'], False)}",
            f"{format_size(u['memory'])}/{_limit(q['max_memory'], True)}",
            f"{format_size(u['disk'])}/{_limit(q['max_disk'], True)}",
            p["description"],
        )
    out.print(table, highlight=False)


@project.command(name="show")
@click.argument("name")
@format_option
@handle_errors
def project_show(name: str, fmt: str) -> None:
    """Show a project's use and limits."""
    with connect() as client:
        data = client.get_project(name)
    if fmt == "json":
        emit_json(data)
    else:
        print_project(data)


@project.command(name="set")
@click.argument("name")
@click.argument("quotas", nargs=-1, required=True, metavar="KEY=VALUE...")
@handle_errors
def project_set(name: str, quotas: tuple[str, ...]) -> None:
    """Set quotas (host administrator): max-instances, max-cpus, max-memory, max-disk
    (=none: no limit)."""
    with connect() as client:
        data = client.set_quotas(name, parse_quotas(quotas))
    print_project(data)


@project.command(name="uplinks")
@click.argument("name")
@click.argument("interfaces", nargs=-1, metavar="[IFACE...]")
@click.option("--none", "clear", is_flag=True, help="allow no host interface")
@handle_errors
def project_uplinks(name: str, interfaces: tuple[str, ...], clear: bool) -> None:
    """Show, or set (host administrator), the host interfaces a project's networks may use
    as uplinks: bridges for bridged networks, a nat network's way out."""
    with connect() as client:
        if interfaces or clear:
            allowed = client.set_uplinks(name, [] if clear else list(interfaces))
        else:
            allowed = client.uplinks(name)
    listed = ", ".join(allowed) if allowed else "none (hangar's own bridges only)"
    out.print(f"uplinks of project {shown(name)}: {shown(listed)}", highlight=False)


@project.command(name="delete")
@click.argument("name")
@handle_errors
def project_delete(name: str) -> None:
    """Delete an empty project (and its tokens)."""
    with connect() as client:
        client.delete_project(name)
    out.print(f"project [bold]{shown(name)}[/] deleted", highlight=False)
