"""Shared CLI plumbing: the root command group, consoles for output, error handling."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console

from hangar.cli import suggest
from hangar.cli.safe import shown
from hangar.client.client import ApiError, Client
from hangar.client.remotes import LOCAL, RemoteStore
from hangar.errors import HangarError

F = TypeVar("F", bound=Callable[..., Any])
# emoji=False: Rich would otherwise turn ':AB:' inside a fingerprint into an emoji.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def handle_errors(fn: F) -> F:
    """Print hangar errors as 'error: message' plus the hint, and exit with their code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            _fail(exc.message, exc.hint, exc.remote_exit_code, exc.action, exc.details)
        except HangarError as exc:
            _fail(exc.message, exc.hint, exc.exit_code, exc.action, exc.details)

    return wrapper  # type: ignore[return-value]


def _fail(
    message: str,
    hint: str,
    code: int,
    action: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    # soft_wrap: no newlines inserted, so fingerprints and paths stay whole (and greppable).
    # Messages carry others' text (names, paths, a guest's output): each line through
    # shown(), so '[...]' is not markup and escape sequences do not reach the terminal.
    err.print(f"[bold red]error:[/] {_lines(message)}", highlight=False, soft_wrap=True)
    if hint:
        err.print(f"[yellow]hint:[/] {_lines(hint)}", highlight=False, soft_wrap=True)
    # The hint is neutral (a web UI shows it too); the command line is the CLI's own.
    for line in suggest.render(action, details or {}, _argv()):
        err.print(f"      {line}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _argv() -> Sequence[str]:
    """The arguments hangar runs with (after 'hangar'), as the root group kept them."""
    ctx = click.get_current_context(silent=True)
    return list(ctx.meta.get(ARGV_KEY, ())) if ctx is not None else []


def _lines(text: str) -> str:
    """A multi-line message (a host command's output) stays on its lines."""
    return "\n".join(shown(line) for line in text.split("\n"))


def format_option(fn: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for scripts",
    )(fn)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def connect() -> Client:
    """A client for the remote and project chosen on the command line (or the current
    remote, see 'hangar remote switch'); the local socket by default."""
    ctx = click.get_current_context()
    options = ctx.find_root().obj or {}
    store = RemoteStore()
    name = options.get("remote") or store.current()
    project = options.get("project")
    if name == LOCAL:
        return Client(project=project)
    return Client(remote=store.get(name), project=project)


ARGV_KEY = "hangar.argv"


class _Root(click.Group):
    """The root group; it keeps the arguments it was given (in the context's meta,
    shared by every subcommand's context) so an error can suggest the same command
    with one more option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = tuple(args)
        return super().parse_args(ctx, args)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hangar")
@click.option(
    "--remote",
    envvar="HANGAR_REMOTE",
    metavar="NAME",
    help="talk to this remote (default: the current one, see 'hangar remote list')",
)
@click.option(
    "--project",
    "-p",
    envvar="HANGAR_PROJECT",
    metavar="NAME",
    help="act in this project (default: the token's, or 'default' locally)",
)
@click.pass_context
def cli(ctx: click.Context, remote: str | None, project: str | None) -> None:
    """hangar: virtual machines on QEMU. Talks to hangard over its API socket, or to a
    remote hangard over HTTPS with a token."""
    ctx.obj = {"remote": remote, "project": project}
