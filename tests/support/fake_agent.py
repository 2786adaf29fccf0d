"""A stand-in for qemu-guest-agent behind QEMU's chardev socket, for component tests.

It speaks the agent's protocol as documented: a 0xFF byte resets its parser,
``guest-sync-delimited`` is answered with 0xFF then the id, and ``guest-exec``
runs a command (here: in a small table of canned programs) whose status is then
polled with ``guest-exec-status``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Program = Callable[[list[str], bytes], tuple[int, bytes, bytes]]


def _echo(args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    return 0, " ".join(args).encode() + b"\n", b""


def _cat(args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    return 0, stdin, b""


def _false(args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    return 3, b"", b"it failed\n"


class FakeAgent:
    def __init__(self, path: Path, *, stale: bytes = b"", exec_polls: int = 2):
        self.path = path
        # Bytes sent before the sync reply, as an agent does after an interrupted client.
        self.stale = stale
        self.exec_polls = exec_polls
        self.programs: dict[str, Program] = {"echo": _echo, "cat": _cat, "false": _false}
        self.commands: list[str] = []
        self.shutdowns: list[str] = []
        self.silent = False
        # Raw reply bytes per command, sent instead of the protocol's answer (a
        # broken or hostile guest agent).
        self.raw: dict[str, bytes] = {}
        self._jobs: dict[int, dict[str, Any]] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while data := await reader.read(4096):
                if self.silent:
                    continue
                buffer += data
                # 0xFF resets the parser: whatever came before it is dropped.
                buffer = buffer.rsplit(b"\xff", 1)[-1]
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        writer.write(self._answer(json.loads(line)))
                        await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _answer(self, message: dict[str, Any]) -> bytes:
        name = message["execute"]
        args = message.get("arguments", {})
        self.commands.append(name)
        if name in self.raw:
            return self.raw[name]
        if name == "guest-sync-delimited":
            return self.stale + b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n"
        if name == "guest-shutdown":
            self.shutdowns.append(args.get("mode", "powerdown"))
            return b""
        try:
            result = self._run(name, args)
        except KeyError as exc:
            error = {"class": "GenericError", "desc": f"no such thing: {exc}"}
            return json.dumps({"error": error}).encode() + b"\n"
        return json.dumps({"return": result}).encode() + b"\n"

    def _run(self, name: str, args: dict[str, Any]) -> Any:
        if name == "guest-get-host-name":
            return {"host-name": "fakeguest"}
        if name == "guest-get-osinfo":
            return {"pretty-name": "Fake OS 1", "kernel-release": "6.1.0-fake"}
        if name == "guest-network-get-interfaces":
            return [
                {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
                {
                    "name": "eth0",
                    "hardware-address": "52:54:00:12:34:56",
                    "ip-addresses": [
                        {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}
                    ],
                },
            ]
        if name == "guest-exec":
            program = self.programs[args["path"]]
            stdin = base64.b64decode(args.get("input-data", ""))
            code, out, err = program(list(args.get("arg", [])), stdin)
            pid = 1000 + len(self._jobs)
            self._jobs[pid] = {"code": code, "out": out, "err": err, "polls": 0}
            return {"pid": pid}
        if name == "guest-exec-status":
            job = self._jobs[args["pid"]]
            job["polls"] += 1
            if job["polls"] < self.exec_polls:
                return {"exited": False}
            return {
                "exited": True,
                "exitcode": job["code"],
                "out-data": base64.b64encode(job["out"]).decode(),
                "err-data": base64.b64encode(job["err"]).decode(),
            }
        raise KeyError(name)
