"""Inside the guest: exec, shell, screenshot, ISO detach."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from hangar.cli.app import cli, connect, emit_json, err, format_option, handle_errors, out
from hangar.cli.safe import shown
from hangar.client.client import Client
from hangar.errors import InvalidInput

PRIVATE_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds")
@click.option("--stdin", "use_stdin", is_flag=True, help="pass this command's stdin to it")
@format_option
@handle_errors
def exec_(name: str, command: tuple[str, ...], timeout: float, use_stdin: bool, fmt: str) -> None:
    """Run COMMAND in VM NAME through its guest agent: its output, and its exit code as ours.

    \b
    hangar exec web -- cat /etc/os-release
    """
    data = sys.stdin.buffer.read() if use_stdin else None
    with connect() as client:
        result = client.exec(name, list(command), stdin=data, timeout=timeout)
    if fmt == "json":
        emit_json(result)
    else:
        # The command's own output, byte for byte (as ssh passes it): what was asked for.
        sys.stdout.write(result["stdout"])
        sys.stdout.flush()
        sys.stderr.write(result["stderr"])
    code = result["exit_code"]
    sys.exit(code if code is not None else 128 + (result.get("signal") or 0))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-i", "--identity", type=click.Path(exists=True, dir_okay=False),
              help="private key (default: the ~/.ssh key whose .pub the VM was given)")  # fmt: skip
@click.option("--agent", "force_agent", is_flag=True, help="use the guest agent, not SSH")
@handle_errors
def shell(name: str, command: tuple[str, ...], identity: str | None, force_agent: bool) -> None:
    """An interactive shell in VM NAME (or run COMMAND there).

    SSH as the image's default user with the injected key, through the VM's
    127.0.0.1 port forward to port 22; the guest agent when SSH is not possible
    (no forward, no key, hangard on another host, no ssh client).
    """
    with connect() as client:
        vm = client.vm(name)
        reason = "" if not force_agent else "--agent"
        argv = None
        if not force_agent:
            argv, reason = ssh_argv(client, vm, identity, list(command))
        if argv is not None:
            out.file.flush()
            os.execvp(argv[0], argv)
        err.print(
            f"[yellow]no SSH: {shown(reason)}; using the guest agent[/]",
            highlight=False,
            soft_wrap=True,
        )
        if command:
            result = client.exec(name, ["sh", "-c", " ".join(command)], timeout=3600)
            sys.stdout.write(result["stdout"])
            sys.stderr.write(result["stderr"])
            sys.exit(result["exit_code"] if result["exit_code"] is not None else 1)
        _agent_shell(client, name)


def ssh_argv(
    client: Client, vm: dict[str, Any], identity: str | None, command: list[str]
) -> tuple[list[str] | None, str]:
    """The ssh command line that reaches ``vm``, or None and why not."""
    if client.remote is not None:
        return None, "hangard runs on another host; its 127.0.0.1 forwards are not reachable"
    if shutil.which("ssh") is None:
        return None, "no ssh client here (install openssh-client)"
    if not vm.get("user"):
        return None, "the VM's image has no cloud-init default user"
    forward = next(
        (f for f in vm["forwards"] if f["guest_port"] == 22 and f["protocol"] == "tcp"), None
    )
    if forward is None:
        return None, "the VM has no port forward to 22"
    key = identity or matching_key(vm.get("ssh_keys", []))
    if key is None:
        return None, "none of ~/.ssh/id_* matches a key the VM was given (use -i)"
    known = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "hangar"
    known.mkdir(parents=True, exist_ok=True)
    argv = [
        "ssh", "-i", key, "-p", str(forward["host_port"]),
        "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        # Trust on first use, per VM id: a new VM on a reused port is a new host.
        "-o", f"HostKeyAlias=hangar-{vm['id']}",
        "-o", f"UserKnownHostsFile={known / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new",
        f"{vm['user']}@{forward['host_address']}",
    ]  # fmt: skip
    if command:
        # As ssh itself does: the words are joined and run by the remote shell.
        argv += ["--", " ".join(command)]
    return argv, ""


def matching_key(public_keys: list[str]) -> str | None:
    """The private key in ~/.ssh whose public half is one of ``public_keys``."""
    blobs = {k.split()[1] for k in public_keys if len(k.split()) >= 2}
    for name in PRIVATE_KEYS:
        private = Path.home() / ".ssh" / name
        public = private.with_suffix(".pub")
        if private.is_file() and public.is_file():
            parts = public.read_text().split()
            if len(parts) >= 2 and parts[1] in blobs:
                return str(private)
    return None


def _agent_shell(client: Client, name: str) -> None:
    """One command per line through the agent: no TTY, no job control."""
    err.print("one command per line (sh -c), Ctrl-D ends", highlight=False, soft_wrap=True)
    while True:
        try:
            line = input(f"{shown(name, markup=False)}$ ")
        except EOFError:
            return
        if not line.strip():
            continue
        result = client.exec(name, ["sh", "-c", line], timeout=3600)
        sys.stdout.write(result["stdout"])
        sys.stderr.write(result["stderr"])
        if result["exit_code"]:
            code = shown(result["exit_code"])
            err.print(f"[dim](exit {code})[/]", highlight=False, soft_wrap=True)


@cli.command()
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@handle_errors
def screenshot(name: str, file: str) -> None:
    """Save VM NAME's screen (VGA display) to FILE as PNG."""
    with connect() as client:
        png = client.screenshot(name)
    if not png.startswith(b"\x89PNG"):
        raise InvalidInput("hangard sent something that is not a PNG")
    Path(file).write_bytes(png)
    out.print(f"saved {len(png)} bytes to {shown(file)}", highlight=False, soft_wrap=True)


@cli.group()
def iso() -> None:
    """Installer ISOs attached to VMs."""


@iso.command(name="detach")
@click.argument("name")
@format_option
@handle_errors
def iso_detach(name: str, fmt: str) -> None:
    """Detach VM NAME's installer ISO (it must be stopped); it then boots from its disk.

    hangard detaches it by itself when the guest powers off on its own.
    """
    with connect() as client:
        vm = client.detach_iso(name)
    if fmt == "json":
        emit_json(vm)
    else:
        out.print(
            f"ISO detached from {shown(name)}; it boots from its disk",
            highlight=False,
            soft_wrap=True,
        )
