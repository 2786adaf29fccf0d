"""Pool, volume and disk-size commands."""

from __future__ import annotations

import click

from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.spec.units import format_size, parse_size


@cli.group()
def storage() -> None:
    """Storage pools."""


@storage.group()
def pool() -> None:
    """Directory-backed storage pools that hold volumes."""


@pool.command(name="create")
@click.argument("name")
@click.argument("path", type=click.Path(file_okay=False))
@handle_errors
def pool_create(name: str, path: str) -> None:
    """Add a pool NAME in folder PATH (created if missing)."""
    with connect() as client:
        created = client.create_pool(name, path)
    out.print(f"pool [bold]{shown(name)}[/] at {shown(created['path'])}", highlight=False)


@pool.command(name="list")
@format_option
@handle_errors
def pool_list(fmt: str) -> None:
    """List pools with the space their volumes use and what is free."""
    with connect() as client:
        pools = client.pools()
    if fmt == "json":
        emit_json(pools)
        return
    table = Table()
    for column in ("NAME", "PATH", "VOLUMES", "USED", "FREE", "SIZE"):
        table.add_column(column)
    for p in pools:
        table.add_row(p["name"], p["path"], str(p["volumes"]), format_size(p["used"]),
                      format_size(p["free"]), format_size(p["size"]))  # fmt: skip
    out.print(table, highlight=False)


@pool.command(name="delete")
@click.argument("name")
@handle_errors
def pool_delete(name: str) -> None:
    """Forget an empty pool (its folder stays)."""
    with connect() as client:
        client.delete_pool(name)
    out.print(f"pool [bold]{shown(name)}[/] deleted", highlight=False)


@cli.group()
def volume() -> None:
    """Volumes: extra disks for VMs, in pools."""


@volume.command(name="create")
@click.argument("name")
@click.option("--size", required=True, help="e.g. 1G")
@click.option("--pool", "pool_name", default="default", show_default=True)
@click.option(
    "--format", "volume_format", type=click.Choice(["qcow2", "raw"]), default="qcow2",
    show_default=True,
)  # fmt: skip
@handle_errors
def volume_create(name: str, size: str, pool_name: str, volume_format: str) -> None:
    """Create an empty volume."""
    with connect() as client:
        created = client.create_volume(
            name, parse_size(size, what="--size"), pool=pool_name, fmt=volume_format
        )
    out.print(
        f"volume [bold]{shown(name)}[/] ({format_size(created['size'])} {volume_format}) "
        f"in pool {shown(pool_name)}",
        highlight=False,
    )


@volume.command(name="list")
@format_option
@handle_errors
def volume_list(fmt: str) -> None:
    """List volumes and the VMs they are attached to."""
    with connect() as client:
        volumes = client.volumes()
    if fmt == "json":
        emit_json(volumes)
        return
    table = Table()
    for column in ("NAME", "POOL", "FORMAT", "SIZE", "ALLOCATED", "VM"):
        table.add_column(column)
    for v in volumes:
        table.add_row(v["name"], v["pool"], v["format"], format_size(v["size"]),
                      format_size(v["allocated"]), v["vm"] or "-")  # fmt: skip
    out.print(table, highlight=False)


@volume.command(name="resize")
@click.argument("name")
@click.option("--size", required=True, help="the new, larger size, e.g. 2G")
@handle_errors
def volume_resize(name: str, size: str) -> None:
    """Grow a volume (online when its VM runs)."""
    with connect() as client:
        resized = client.resize_volume(name, parse_size(size, what="--size"))
    out.print(f"volume [bold]{shown(name)}[/] is {format_size(resized['size'])}", highlight=False)


@volume.command(name="attach")
@click.argument("name")
@click.argument("vm")
@handle_errors
def volume_attach(name: str, vm: str) -> None:
    """Attach volume NAME to stopped VM (it appears as the next virtio disk)."""
    with connect() as client:
        client.attach_volume(name, vm)
    out.print(f"volume [bold]{shown(name)}[/] attached to {shown(vm)}", highlight=False)


@volume.command(name="detach")
@click.argument("name")
@click.argument("vm")
@handle_errors
def volume_detach(name: str, vm: str) -> None:
    """Detach volume NAME from stopped VM."""
    with connect() as client:
        client.detach_volume(name, vm)
    out.print(f"volume [bold]{shown(name)}[/] detached from {shown(vm)}", highlight=False)


@volume.command(name="delete")
@click.argument("name")
@handle_errors
def volume_delete(name: str) -> None:
    """Delete a volume and its file (refused while attached)."""
    with connect() as client:
        client.delete_volume(name)
    out.print(f"volume [bold]{shown(name)}[/] deleted", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--disk", required=True, help="the root disk's new, larger size, e.g. 4G")
@handle_errors
def resize(name: str, disk: str) -> None:
    """Grow VM NAME's root disk (online when it runs; the tiny guest grows ext4 at boot)."""
    with connect() as client:
        vm = client.resize_vm(name, parse_size(disk, what="--disk"))
    out.print(
        f"VM [bold]{shown(name)}[/] has a {format_size(vm['disk_size'])} disk", highlight=False
    )
