"""``hangar console``: the serial console in the terminal, with Ctrl-] to detach."""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import threading
import tty
from typing import TYPE_CHECKING

from hangar.cli.safe import shown
from hangar.client.client import Client
from hangar.errors import Conflict

if TYPE_CHECKING:  # websockets is imported when a console opens (CLI start-up time)
    from websockets.sync.client import ClientConnection

DETACH = b"\x1d"  # Ctrl-], as telnet and virsh console use


def attach(client: Client, name: str) -> None:
    """Copy the console to the terminal and keystrokes to the console until Ctrl-] or EOF."""
    with client.console(name) as ws:
        _attach(ws, name)


def _attach(ws: ClientConnection, name: str) -> None:
    from websockets.exceptions import ConnectionClosed

    stdin = sys.stdin.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    done = threading.Event()
    closed_reason: list[str] = []

    def guest_to_terminal() -> None:
        try:
            for message in ws:
                # The guest's console, passed as the guest wrote it (as a terminal would).
                data = message if isinstance(message, bytes) else message.encode()
                os.write(sys.stdout.fileno(), data)
        except ConnectionClosed:
            pass
        if ws.close_code is not None and ws.close_code >= 4000 and ws.close_reason:
            closed_reason.append(ws.close_reason)
        done.set()

    reader = threading.Thread(target=guest_to_terminal, daemon=True)
    reader.start()
    if interactive:
        label = shown(name, markup=False)
        sys.stderr.write(f"connected to the console of '{label}'; detach with Ctrl-]\r\n")
        tty.setraw(stdin)
    try:
        while not done.is_set():
            data = os.read(stdin, 1024)
            if not data:
                # Input ended (a script piped it in): let the output drain, then leave.
                done.wait(1.0)
                break
            if interactive and DETACH in data:
                data = data.split(DETACH, 1)[0]
                if data:
                    ws.send(data)
                break
            ws.send(data)
    except ConnectionClosed:
        pass
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        with contextlib.suppress(Exception):
            ws.close()
        reader.join(timeout=2)
    if interactive:
        sys.stderr.write("\ndetached\n")
    if closed_reason:
        raise Conflict(closed_reason[0], hint=f"check 'hangar info {name}'")
