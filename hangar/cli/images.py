"""Image commands."""

from __future__ import annotations

import click

from hangar.cli import operations
from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.spec.units import format_size


@cli.group()
def image() -> None:
    """Guest images."""


@image.command(name="build")
@click.argument("name")
@click.option("--force", is_flag=True, help="rebuild even if the image is up to date")
@click.option("--no-wait", is_flag=True, help="print the operation id and return at once")
@format_option
@handle_errors
def image_build(name: str, force: bool, no_wait: bool, fmt: str) -> None:
    """Build an image from Debian packages (cached; rebuilt only when its recipe changes)."""
    with connect() as client:
        op = client.start_image_build(name, force=force)
        if no_wait:
            if fmt == "json":
                emit_json(op)
            else:
                op_id = shown(op["id"])
                out.print(f"operation {op_id} started: hangar operation wait {op_id}")
            return
        result = operations.follow(client, op)["result"]
    if fmt == "json":
        emit_json(result)
        return
    for line in result["log"]:
        out.print(f"  {shown(line)}", highlight=False)
    verb = "built" if result["built"] else "up to date"
    out.print(f"image [bold]{shown(name)}[/] {verb}", highlight=False)


@image.command(name="list")
@format_option
@handle_errors
def image_list(fmt: str) -> None:
    """List the images that are built."""
    with connect() as client:
        images = client.images()
    if fmt == "json":
        emit_json(images)
        return
    table = Table()
    for column in ("NAME", "PROJECT", "DISK", "MEMORY", "CREATED", "RECIPE", "DESCRIPTION"):
        table.add_column(column)
    for img in images:
        table.add_row(
            img["name"],
            img.get("project") or "(shared)",
            format_size(img["disk_virtual_size"]),
            format_size(img["defaults"]["memory"]),
            img["created_at"],
            img["recipe_hash"][:12],
            img["description"],
        )
    out.print(table, highlight=False)
