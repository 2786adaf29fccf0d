"""Remote commands: other hangards over HTTPS, their certificates pinned on first use."""

from __future__ import annotations

import click

from hangar.certs import fingerprint
from hangar.cli.app import cli, emit_json, format_option, handle_errors, out
from hangar.cli.safe import Table, shown
from hangar.client.client import Client
from hangar.client.remotes import LOCAL, Remote, RemoteStore, fetch_certificate, parse_url
from hangar.errors import InvalidInput


@cli.group()
def remote() -> None:
    """Other hangards this CLI manages (kept in ~/.config/hangar/remotes.json)."""


@remote.command(name="add")
@click.argument("name")
@click.argument("url")
@click.option("--token", required=True, envvar="HANGAR_TOKEN", help="the token to use there")
@click.option(
    "--accept-certificate",
    is_flag=True,
    help="trust the certificate shown without asking (for scripts)",
)
@click.option("--project", "default_project", help="project to act in there (default: the token's)")
@handle_errors
def remote_add(
    name: str, url: str, token: str, accept_certificate: bool, default_project: str | None
) -> None:
    """Add remote NAME at https://HOST:PORT, trusting its certificate on first use."""
    store = RemoteStore()
    parse_url(url)
    pem = fetch_certificate(url)
    seen = fingerprint(pem)
    # click.echo, not Rich: a fingerprint must never be wrapped or styled.
    click.echo(
        f"certificate of {shown(url, markup=False)}\n  SHA-256 fingerprint: {seen}", err=True
    )
    if not accept_certificate:
        click.echo(
            "compare it with the one hangard logged at start ('serving HTTPS on ...')", err=True
        )
        if not click.confirm("trust this certificate?", default=False, err=True):
            raise InvalidInput("certificate not trusted; nothing was added")
    candidate = Remote(
        name=name, url=url, token=token, certificate=pem, fingerprint=seen, project=default_project
    )
    with Client(remote=candidate) as client:
        who = client.whoami()  # proves the token before anything is saved
    store.add(candidate)
    out.print(
        f"remote [bold]{shown(name)}[/] added: token '{shown(who['name'])}' "
        f"({shown(who['role'])}) of project '{shown(who['project'])}'",
        highlight=False,
    )


@remote.command(name="list")
@format_option
@handle_errors
def remote_list(fmt: str) -> None:
    """List remotes; * marks the current one."""
    store = RemoteStore()
    current = store.current()
    remotes = store.list()
    if fmt == "json":
        emit_json(
            {
                "current": current,
                "remotes": [
                    {"name": r.name, "url": r.url, "fingerprint": r.fingerprint} for r in remotes
                ],
            }
        )
        return
    table = Table()
    for column in ("", "NAME", "URL", "FINGERPRINT"):
        table.add_column(column)
    table.add_row("*" if current == LOCAL else "", LOCAL, "unix socket", "-")
    for r in remotes:
        table.add_row("*" if current == r.name else "", r.name, r.url, r.fingerprint[:23] + "…")
    out.print(table, highlight=False)


@remote.command(name="switch")
@click.argument("name")
@handle_errors
def remote_switch(name: str) -> None:
    """Make NAME the remote commands talk to ('local' for this host's socket)."""
    RemoteStore().switch(name)
    out.print(f"current remote: [bold]{shown(name)}[/]", highlight=False)


@remote.command(name="remove")
@click.argument("name")
@handle_errors
def remote_remove(name: str) -> None:
    """Forget remote NAME (its token and pinned certificate)."""
    RemoteStore().remove(name)
    out.print(f"remote [bold]{shown(name)}[/] removed", highlight=False)
