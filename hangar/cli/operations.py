"""Operation commands, and waiting for one with a progress bar."""

from __future__ import annotations

from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hangar.cli.app import cli, connect, emit_json, err, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.client.client import Client


def follow(client: Client, op: dict[str, Any], *, timeout: float = 3600) -> dict[str, Any]:
    """Wait for ``op`` with a Rich progress bar (on stderr); return it when it succeeds.

    Ctrl-C stops waiting, not the operation (its id is printed to follow it later).
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[percent]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=err,
        transient=True,
    )
    with progress:
        # The columns are Rich markup: the description and message go through shown().
        task = progress.add_task(shown(op["description"]), total=100, percent="", message="")

        def update(current: dict[str, Any]) -> None:
            pct = current.get("progress_percent")
            extra = f"{pct:.0f}%" if pct is not None else ""
            if current.get("progress_bytes") is not None:
                extra += f" {shown(current['progress_bytes'])} B"
            progress.update(
                task,
                completed=pct or 0,
                percent=extra,
                message=shown((current.get("progress_message") or "")[:60]),
            )

        try:
            return client.wait_operation(op["id"], timeout=timeout, on_progress=update)
        except KeyboardInterrupt:
            err.print(
                f"stopped waiting; the operation goes on: hangar operation show {shown(op['id'])}"
            )
            raise SystemExit(130) from None


@cli.group()
def operation() -> None:
    """Long-running operations (image builds, ...): list, show, cancel."""


@operation.command(name="list")
@format_option
@handle_errors
def operation_list(fmt: str) -> None:
    """List recent operations (finished ones are kept an hour)."""
    with connect() as client:
        ops = client.operations()
    if fmt == "json":
        emit_json(ops)
        return
    table = Table()
    for column in ("ID", "PROJECT", "TYPE", "STATUS", "PROGRESS", "DESCRIPTION", "CREATED"):
        table.add_column(column, no_wrap=column == "ID")  # ids are typed back whole
    for op in ops:
        pct = op.get("progress_percent")
        table.add_row(
            op["id"],
            op["project"],
            op["type"],
            op["status"],
            f"{pct:.0f}%" if pct is not None else "-",
            op["description"],
            op["created_at"],
        )
    out.print(table, highlight=False)


@operation.command(name="show")
@click.argument("op_id")
@handle_errors
def operation_show(op_id: str) -> None:
    """Show one operation as JSON."""
    with connect() as client:
        emit_json(client.operation(op_id))


@operation.command(name="wait")
@click.argument("op_id")
@handle_errors
def operation_wait(op_id: str) -> None:
    """Wait for an operation with a progress bar."""
    with connect() as client:
        op = follow(client, client.operation(op_id))
    out.print(f"operation {shown(op_id)}: {shown(op['status'])}", highlight=False)


@operation.command(name="cancel")
@click.argument("op_id")
@handle_errors
def operation_cancel(op_id: str) -> None:
    """Cancel a running operation (it cleans up after itself)."""
    with connect() as client:
        client.cancel_operation(op_id)
        op = client.operation(op_id, wait=30)
    out.print(f"operation {shown(op_id)}: {shown(op['status'])}", highlight=False)
