"""Snapshot commands: create, list (the tree), restore, delete."""

from __future__ import annotations

from typing import Any

import click

from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.cli.storage import NO_WAIT, _finish
from hangar.spec.units import format_size


@cli.group()
def snapshot() -> None:
    """Snapshots of a VM: its disk, and with --memory its running state."""


@snapshot.command(name="create")
@click.argument("vm")
@click.argument("name")
@click.option(
    "--memory", is_flag=True, help="also RAM and device state (running VMs; they keep running)"
)
@NO_WAIT
@format_option
@handle_errors
def snapshot_create(vm: str, name: str, memory: bool, no_wait: bool, fmt: str) -> None:
    """Snapshot VM (running or stopped) as NAME."""
    with connect() as client:
        op = client.start_snapshot(vm, name, memory=memory)
        snap = _finish(client, op, no_wait=no_wait, as_json=fmt == "json")
    if snap is None:
        return
    if fmt == "json":
        emit_json(snap)
        return
    what = "disk, memory and devices" if snap["memory"] else "disk"
    out.print(
        f"snapshot [bold]{shown(name)}[/] of {shown(vm)}: {what} ({format_size(snap['size'])})",
        highlight=False,
    )


@snapshot.command(name="list")
@click.argument("vm")
@format_option
@handle_errors
def snapshot_list(vm: str, fmt: str) -> None:
    """Show VM's snapshots as a tree ('*': the VM's disk is built on it)."""
    with connect() as client:
        snaps = client.snapshots(vm)
    if fmt == "json":
        emit_json(snaps)
        return
    if not snaps:
        out.print(f"VM {shown(vm)} has no snapshots", highlight=False)
        return
    table = Table()
    for column in ("NAME", "PARENT", "CHILDREN", "MEMORY", "SIZE", "CREATED"):
        table.add_column(column)
    for snap in snaps:
        table.add_row(*_row(snap))
    out.print(table, highlight=False)


def _row(snap: dict[str, Any]) -> list[str]:
    indent = "  " * int(snap["depth"]) + ("└ " if snap["depth"] else "")
    mark = " *" if snap["current"] else ""
    return [
        f"{indent}{snap['name']}{mark}",
        snap["parent"] or "-",
        ", ".join(snap["children"]) or "-",
        "yes" if snap["memory"] else "no",
        format_size(snap["size"]),
        snap["created_at"],
    ]


@snapshot.command(name="restore")
@click.argument("vm")
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="discard the VM's current state (a running guest, or disk changes since its snapshot)",
)
@NO_WAIT
@format_option
@handle_errors
def snapshot_restore(vm: str, name: str, force: bool, no_wait: bool, fmt: str) -> None:
    """Restore VM to snapshot NAME: disk, config and, if saved, the running guest."""
    with connect() as client:
        op = client.start_restore(vm, name, force=force)
        result = _finish(client, op, no_wait=no_wait, as_json=fmt == "json")
    if result is None:
        return
    if fmt == "json":
        emit_json(result)
        return
    out.print(
        f"VM [bold]{shown(vm)}[/] restored to {shown(name)} ({shown(result['state'])})",
        highlight=False,
    )


@snapshot.command(name="delete")
@click.argument("vm")
@click.argument("name")
@NO_WAIT
@handle_errors
def snapshot_delete(vm: str, name: str, no_wait: bool) -> None:
    """Delete snapshot NAME; snapshots built on it keep their content (it is merged in)."""
    with connect() as client:
        op = client.start_delete_snapshot(vm, name)
        if _finish(client, op, no_wait=no_wait, as_json=False) is None:
            return
    out.print(f"snapshot [bold]{shown(name)}[/] of {shown(vm)} deleted", highlight=False)
