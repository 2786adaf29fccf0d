"""Storage commands: image import/export/delete, VM copies, templates."""

from __future__ import annotations

from typing import Any

import click

from hangar.cli import operations
from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.images import image
from hangar.cli.safe import shown
from hangar.client.client import Client
from hangar.spec.units import format_size, parse_size

# The CLI speaks only the API: these mirror the API's enums (see /openapi.json).
FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx", "ova")
EXPORT_FORMATS = ("qcow2", "raw", "vmdk", "vhdx", "ova")
MAX_STANDBY = 8  # hangar.spec.image.MAX_STANDBY (importing it would load pydantic)
NO_WAIT = click.option("--no-wait", is_flag=True, help="print the operation id and return at once")


def _finish(
    client: Client, op: dict[str, Any], *, no_wait: bool, as_json: bool
) -> dict[str, Any] | None:
    """Follow ``op`` with a progress bar and return its result; with ``no_wait``, print
    the operation and return None."""
    if no_wait:
        if as_json:
            emit_json(op)
        else:
            op_id = shown(op["id"])
            out.print(f"operation {op_id} started: hangar operation wait {op_id}")
        return None
    result: dict[str, Any] = operations.follow(client, op)["result"]
    return result


@image.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", help="image name (default: from the file name)")
@click.option(
    "--format",
    "image_format",
    type=click.Choice(FORMATS),
    help="the file's format (default: detected from its bytes; never probed by QEMU)",
)
@click.option("--max-size", help="refuse virtual sizes over this (default: hangard's limit)")
@NO_WAIT
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def image_import(
    file: str,
    name: str | None,
    image_format: str | None,
    max_size: str | None,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Import a qcow2, raw, VMDK, VDI, VHDX or OVA file as an image, after safety checks."""
    limit = parse_size(max_size, what="--max-size") if max_size else None
    with connect() as client:
        op = client.start_import(file, name=name, fmt=image_format, max_size=limit)
        result = _finish(client, op, no_wait=no_wait, as_json=as_json)
    if result is None:
        return
    if as_json:
        emit_json(result)
        return
    for line in result["log"]:
        out.print(f"  {shown(line)}", highlight=False)
    img = result["image"]
    out.print(
        f"image [bold]{shown(img['name'])}[/] ({format_size(img['disk_virtual_size'])}): "
        f"{shown(img['description'])}",
        highlight=False,
    )


@image.command(name="export")
@click.argument("source")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), required=True)
@NO_WAIT
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def image_export(source: str, file: str, export_format: str, no_wait: bool, as_json: bool) -> None:
    """Export image or VM SOURCE (running or stopped) to a new FILE: qcow2, raw, vmdk, vhdx, ova."""
    with connect() as client:
        op = client.start_export(source, export_format, file)
        result = _finish(client, op, no_wait=no_wait, as_json=as_json)
    if result is None:
        return
    if as_json:
        emit_json(result)
        return
    out.print(
        f"{shown(result['source_kind'])} [bold]{shown(source)}[/] exported to "
        f"{shown(result['path'])} "
        f"({export_format}, {format_size(result['size'])})",
        highlight=False,
    )


@image.command(name="delete")
@click.argument("name")
@handle_errors
def image_delete(name: str) -> None:
    """Delete an image or template (refused while linked clones use it)."""
    with connect() as client:
        client.delete_image(name)
    out.print(f"image [bold]{shown(name)}[/] deleted", highlight=False)


@image.command(name="share")
@click.argument("name")
@click.option("--project", help="give it to this project alone (default: share with every project)")
@handle_errors
def image_share(name: str, project: str | None) -> None:
    """Share a template with every project, or give it to one (host administrator)."""
    with connect() as client:
        client.share_image(name, project)
    whom = f"project {shown(project)} alone" if project else "every project"
    out.print(f"image {shown(name)} is now used by {whom}", highlight=False)


@cli.command()
@click.argument("source")
@click.argument("name")
@click.option("--full", is_flag=True, help="an independent copy (default: linked to the image)")
@click.option("--start", is_flag=True, help="start the copy")
@NO_WAIT
@format_option
@handle_errors
def copy(source: str, name: str, full: bool, start: bool, no_wait: bool, fmt: str) -> None:
    """Copy VM SOURCE (running or stopped) to a new VM NAME with a new identity."""
    with connect() as client:
        op = client.start_copy(source, name, full=full, start=start)
        vm = _finish(client, op, no_wait=no_wait, as_json=fmt == "json")
    if vm is None:
        return
    if fmt == "json":
        emit_json(vm)
        return
    kind = "full" if full else "linked"
    out.print(
        f"VM [bold]{shown(vm['name'])}[/] is a {kind} copy of {shown(source)} "
        f"({shown(vm['state'])})",
        highlight=False,
    )


@image.command(name="standby")
@click.argument("template")
@click.argument("count", type=click.IntRange(0, MAX_STANDBY), required=False)
@format_option
@handle_errors
def image_standby(template: str, count: int | None, fmt: str) -> None:
    """Keep COUNT VMs resumed from warm TEMPLATE, each already a distinct machine: a
    launch claims one and only renames it (0: none). They run in hangard's project
    '_standby' and are made again in the background. Without COUNT: what it has."""
    with connect() as client:
        view = client.standby(template) if count is None else client.set_standby(template, count)
    if fmt == "json":
        emit_json(view)
        return
    ready = shown(", ".join(view["ready"]) or "none yet")
    out.print(
        f"template [bold]{shown(template)}[/]: {shown(view['count'])} standby VM(s); "
        f"ready: {ready}",
        highlight=False,
    )


@cli.command()
@click.argument("vm")
@click.argument("template")
@click.option(
    "--warm",
    is_flag=True,
    help="save the running VM's guest too: launches resume it (under a new identity)",
)
@click.option(
    "--standby",
    type=click.IntRange(0, MAX_STANDBY),
    default=0,
    help="with --warm: keep N VMs resumed from it, which launches claim (fastest start)",
)
@NO_WAIT
@format_option
@handle_errors
def publish(vm: str, template: str, warm: bool, standby: int, no_wait: bool, fmt: str) -> None:
    """Capture stopped VM as TEMPLATE (generalized), or with --warm a running VM as it
    runs; launch VMs from it with 'hangar launch'."""
    with connect() as client:
        op = client.start_publish(vm, template, warm=warm, standby=standby)
        manifest = _finish(client, op, no_wait=no_wait, as_json=fmt == "json")
    if manifest is None:
        return
    if fmt == "json":
        emit_json(manifest)
        return
    out.print(
        f"template [bold]{shown(template)}[/]: {shown(manifest['description'])}", highlight=False
    )


@cli.command()
@click.argument("vm")
@click.option("--count", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--prefix", help="name the forks PREFIX-1 … PREFIX-N (default: VM-fork)")
@NO_WAIT
@format_option
@handle_errors
def fork(vm: str, count: int, prefix: str | None, no_wait: bool, fmt: str) -> None:
    """Fork running VM into COUNT running VMs, each resumed from this moment of it with its
    own identity (name, MAC, DHCP lease, machine-id)."""
    with connect() as client:
        op = client.start_fork(vm, count, prefix=prefix)
        result = _finish(client, op, no_wait=no_wait, as_json=fmt == "json")
    if result is None:
        return
    if fmt == "json":
        emit_json(result)
        return
    for forked in result["vms"]:
        out.print(
            f"VM [bold]{shown(forked['name'])}[/] is {shown(forked['state'])}", highlight=False
        )
    out.print(f"  (linked clones of warm template {shown(result['template'])})", highlight=False)
