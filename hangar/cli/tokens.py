"""Token commands."""

from __future__ import annotations

import click

from hangar.cli.app import cli, connect, emit_json, err, format_option, handle_errors, out
from hangar.cli.safe import Table, shown


@cli.group()
def token() -> None:
    """API tokens for remote access (roles: admin, operator, viewer)."""


@token.command(name="create")
@click.option("--project", "project_name", help="the token's project (default: as --project)")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), required=True)
@click.option("--name", default="", help="a name to recognise it by in lists and the audit log")
@format_option
@handle_errors
def token_create(project_name: str | None, role: str, name: str, fmt: str) -> None:
    """Create a token; its secret is printed this once (hangard keeps only a hash)."""
    with connect() as client:
        created = client.create_token(role, name, project=project_name)
    if fmt == "json":
        emit_json(created)
        return
    err.print(
        f"token '{shown(created['name'])}' ({shown(created['role'])} of project "
        f"'{shown(created['project'])}', id {shown(created['id'])}); the secret is shown "
        "only now:",
        highlight=False,
    )
    click.echo(shown(created["secret"], markup=False))


@token.command(name="list")
@format_option
@handle_errors
def token_list(fmt: str) -> None:
    """List tokens (never their secrets)."""
    with connect() as client:
        tokens = client.tokens()
    if fmt == "json":
        emit_json(tokens)
        return
    table = Table()
    for column in ("ID", "NAME", "PROJECT", "ROLE", "CREATED", "LAST USED"):
        table.add_column(column, no_wrap=column == "ID")  # ids are typed back whole
    for t in tokens:
        table.add_row(
            t["id"], t["name"], t["project"], t["role"], t["created_at"], t["last_used_at"] or "-"
        )
    out.print(table, highlight=False)


@token.command(name="revoke")
@click.argument("token_id")
@handle_errors
def token_revoke(token_id: str) -> None:
    """Revoke a token at once."""
    with connect() as client:
        client.revoke_token(token_id)
    out.print(f"token {shown(token_id)} revoked", highlight=False)
