"""``hangar monitor`` (live events) and ``hangar audit`` (the audit log)."""

from __future__ import annotations

import json
from typing import Any

import click

from hangar.cli.app import cli, connect, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown


def describe(event: dict[str, Any]) -> str:
    """One line for a person, in Rich markup: every value from the event through shown()
    (a lifecycle reason is a guest's serial line, a resource a path anyone typed)."""
    raw = event["data"]
    data = {key: None if value is None else shown(value) for key, value in raw.items()}
    if event["type"] == "lifecycle":
        before = f"{data['previous']} -> " if data.get("previous") else ""
        reason = f" ({data['reason']})" if data.get("reason") else ""
        return f"vm {data['vm']}: {before}{data['state']}{reason}"
    if event["type"] == "network":
        return f"network {data['network']} ({data['type']}): {data['change']}"
    if event["type"] == "operation":
        pct = raw.get("progress_percent")
        return (
            f"operation {shown(raw['id'][:12])} {data['description']}: {data['status']}"
            + (f" {pct:.0f}%" if pct is not None else "")
            + (f" {data['progress_message']}" if data.get("progress_message") else "")
        )
    if event["type"] == "audit":
        return (
            f"{data['actor_name']} ({data['actor_id']}) {data['action']} {data['resource']}"
            f" -> {data['result']} {data['status']}"
            + (f" ({data['message']})" if data.get("message") else "")
        )
    return shown(json.dumps(raw))


@cli.command()
@click.option(
    "--type",
    "types",
    help="comma-separated: lifecycle, network, operation, audit (default: all)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON event per line")
@handle_errors
def monitor(types: str | None, as_json: bool) -> None:
    """Print events live (VM state changes, networks, operations, audit) until Ctrl-C."""
    try:
        with connect() as client, client.events(types) as events:
            for event in events:
                if event["type"] == "subscribed" and not as_json:
                    continue
                if as_json:
                    click.echo(json.dumps(event, sort_keys=True))
                else:
                    at, project, kind = (shown(event[k]) for k in ("at", "project", "type"))
                    out.print(
                        f"{at} \\[{project}] {kind:9} {describe(event)}",
                        highlight=False,
                        soft_wrap=True,
                    )
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--limit", type=int, default=100, show_default=True, help="newest entries")
@format_option
@handle_errors
def audit(limit: int, fmt: str) -> None:
    """Show the audit log: who changed what, when, with which result (--project P)."""
    with connect() as client:
        entries = client.audit(limit=limit)
    if fmt == "json":
        emit_json(entries)
        return
    table = Table()
    for column in ("WHEN", "PROJECT", "WHO", "ACTION", "RESOURCE", "RESULT"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e["at"],
            e["project"],
            f"{e['actor_name']} ({e['actor_id']})",
            e["action"],
            # The message says more (a noise summary: its busiest sources).
            f"{e['resource']} ({e['message']})" if e.get("message") else e["resource"],
            f"{e['result']} ({e['status']})",
        )
    out.print(table, highlight=False)
