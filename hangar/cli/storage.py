"""Storage commands: image import/export/delete, VM copies, templates."""

from __future__ import annotations

import click

from hangar.cli.app import cli, emit_json, err, format_option, handle_errors, out
from hangar.cli.images import image
from hangar.client.client import Client
from hangar.spec.units import format_size, parse_size

# The CLI speaks only the API: these mirror the API's enums (see /openapi.json).
FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx", "ova")
EXPORT_FORMATS = ("qcow2", "raw", "vmdk", "vhdx", "ova")


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
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def image_import(
    file: str, name: str | None, image_format: str | None, max_size: str | None, as_json: bool
) -> None:
    """Import a qcow2, raw, VMDK, VDI, VHDX or OVA file as an image, after safety checks."""
    limit = parse_size(max_size, what="--max-size") if max_size else None
    with Client() as client, err.status(f"importing {file}…"):
        result = client.import_image(file, name=name, fmt=image_format, max_size=limit)
    if as_json:
        emit_json(result)
        return
    for line in result["log"]:
        out.print(f"  {line}", highlight=False)
    img = result["image"]
    out.print(
        f"image [bold]{img['name']}[/] ({format_size(img['disk_virtual_size'])}): "
        f"{img['description']}",
        highlight=False,
    )


@image.command(name="export")
@click.argument("source")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), required=True)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@handle_errors
def image_export(source: str, file: str, export_format: str, as_json: bool) -> None:
    """Export image or VM SOURCE (running or stopped) to a new FILE: qcow2, raw, vmdk, vhdx, ova."""
    with Client() as client, err.status(f"exporting {source}…"):
        result = client.export(source, export_format, file)
    if as_json:
        emit_json(result)
        return
    out.print(
        f"{result['source_kind']} [bold]{source}[/] exported to {result['path']} "
        f"({export_format}, {format_size(result['size'])})",
        highlight=False,
    )


@image.command(name="delete")
@click.argument("name")
@handle_errors
def image_delete(name: str) -> None:
    """Delete an image or template (refused while linked clones use it)."""
    with Client() as client:
        client.delete_image(name)
    out.print(f"image [bold]{name}[/] deleted", highlight=False)


@cli.command()
@click.argument("source")
@click.argument("name")
@click.option("--full", is_flag=True, help="an independent copy (default: linked to the image)")
@click.option("--start", is_flag=True, help="start the copy")
@format_option
@handle_errors
def copy(source: str, name: str, full: bool, start: bool, fmt: str) -> None:
    """Copy VM SOURCE (running or stopped) to a new VM NAME with a new identity."""
    with Client() as client, err.status(f"copying {source}…"):
        vm = client.copy(source, name, full=full, start=start)
    if fmt == "json":
        emit_json(vm)
        return
    kind = "full" if full else "linked"
    out.print(
        f"VM [bold]{vm['name']}[/] is a {kind} copy of {source} ({vm['state']})", highlight=False
    )


@cli.command()
@click.argument("vm")
@click.argument("template")
@format_option
@handle_errors
def publish(vm: str, template: str, fmt: str) -> None:
    """Capture stopped VM as TEMPLATE (generalized); launch VMs from it with 'hangar launch'."""
    with Client() as client, err.status(f"publishing {vm}…"):
        manifest = client.publish(vm, template)
    if fmt == "json":
        emit_json(manifest)
        return
    out.print(f"template [bold]{template}[/]: {manifest['description']}", highlight=False)
