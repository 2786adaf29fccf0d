"""Drive a guest's serial console through hangard's websocket, like a person at a terminal."""

from __future__ import annotations

import itertools
import re
import time
from contextlib import AbstractContextManager

from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection

from hangar.client.client import Client

_ids = itertools.count()
# A kernel message on the console ("[   12.345678] IPv6: ... link becomes ready") may land
# inside a command's output: a restored guest's NIC comes up again while 'cat' prints.
KERNEL_LINE = re.compile(r"\[\s*\d+\.\d{6}\][^\r\n]*(\r?\n)?")


class GuestConsole:
    def __init__(self, connection: AbstractContextManager[ClientConnection]):
        self._connection = connection
        self.ws = connection.__enter__()
        self.seen = ""

    def send(self, text: str) -> None:
        self.ws.send(text.encode())

    def read_for(self, seconds: float) -> str:
        """Everything the guest prints during ``seconds``."""
        got = ""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = self.ws.recv(timeout=left)
            except TimeoutError:
                break
            got += data.decode(errors="replace") if isinstance(data, bytes) else data
        self.seen += got
        return got

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until the output since the last match contains ``pattern`` (a regex)."""
        buffer = ""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, buffer)
            if match:
                self.seen += buffer
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the console in {timeout} s: {buffer!r}")
            try:
                data = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            buffer += data.decode(errors="replace") if isinstance(data, bytes) else data

    def run(self, command: str, timeout: float = 20.0) -> str:
        """Run a shell command in the guest and return its output (the shell must be up)."""
        n = next(_ids)
        # The arithmetic makes the end marker differ from the echoed command line.
        self.send(f"{command}; echo END{n}-$((40+2))-$?\n")
        match = self.expect(rf"([\s\S]*)END{n}-42-(\d+)", timeout)
        return KERNEL_LINE.sub("", match.group(1))

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def guest(client: Client, name: str, command: str, timeout: float = 30.0) -> str:
    """Run ``command`` on the guest's console. The server lets go of the previous
    console session asynchronously, so a 'console in use' refusal is retried."""
    for _ in range(50):
        c = GuestConsole(client.console(name))
        try:
            c.send("\n")
            return c.run(command, timeout=timeout)
        except ConnectionClosedError as exc:
            if "in use" not in str(exc):
                raise
        finally:
            c.close()
        time.sleep(0.1)
    raise AssertionError(f"the console of {name} stayed in use")
