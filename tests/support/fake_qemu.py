"""A stand-in for qemu-system-x86_64 for component tests: same argv, fake guest.

It reads the options hangar passes (-qmp, -pidfile, -chardev ...console...,
-S), writes its pid file, serves QMP with :class:`FakeQMPServer` and a serial
console socket that echoes, and exits the way QEMU does (0 after a guest
shutdown or ``quit``). Behaviour is chosen by environment variables baked into
the wrapper script tests create (hangar starts QEMU with a clean environment):

* ``FAKE_QEMU_FAIL=msg`` — print msg to stderr and exit 1 before anything, like
  QEMU refusing a bad option.
* ``FAKE_QEMU_POWERDOWN=ignore`` — the guest ignores the ACPI power button.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.support.fake_agent import FakeAgent
from tests.support.fake_qmp import FakeQMPServer


def _option(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
    return None


def _console(argv: list[str]) -> tuple[Path, Path]:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-chardev" and "id=console" in argv[i + 1]:
            opts = dict(p.split("=", 1) for p in argv[i + 1].split(",")[1:] if "=" in p)
            return Path(opts["path"]), Path(opts["logfile"])
    raise SystemExit("fake qemu: no console chardev")


async def run(argv: list[str]) -> int:
    qmp = _option(argv, "-qmp")
    pidfile = _option(argv, "-pidfile")
    assert qmp and pidfile
    qmp_path = Path(qmp.removeprefix("unix:").split(",")[0])
    console_path, serial_log = _console(argv)
    Path(pidfile).write_text(f"{os.getpid()}\n")
    log = serial_log.open("ab")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            log.write(data)
            log.flush()

    console = await asyncio.start_unix_server(echo, path=str(console_path))
    agent = await _agent(argv)
    vnc = await _vnc(argv)
    fake = FakeQMPServer(
        qmp_path,
        paused="-S" in argv,
        incoming="-incoming" in argv,  # hangar passes -incoming defer only
        guest_obeys_powerdown=os.environ.get("FAKE_QEMU_POWERDOWN") != "ignore",
    )
    await fake.start()
    loop = asyncio.get_running_loop()
    # Like QEMU: SIGTERM is the host telling it to quit. SIGUSR1 is the test's
    # knob for "the guest powers itself off".
    loop.add_signal_handler(signal.SIGTERM, fake.host_signal)
    loop.add_signal_handler(signal.SIGUSR1, fake.guest_shutdown)
    booted = False
    while not fake.exited:
        if fake.running and not booted:
            log.write(b"fake guest booting\r\nHANGAR-BOOT-COMPLETE\r\n")
            log.flush()
            booted = True
        if agent is not None and agent.shutdowns:
            # The agent's guest-shutdown: the guest powers itself off.
            agent.shutdowns.clear()
            fake.guest_shutdown()
        await asyncio.sleep(0.01)
    console.close()
    if agent is not None:
        await agent.close()
    if vnc is not None:
        vnc.close()
    await fake.close()
    return 0


async def _agent(argv: list[str]) -> FakeAgent | None:
    """The guest agent channel, when hangar asked for one (-chardev socket,id=qga)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-chardev" and "id=qga" in argv[i + 1]:
            opts = dict(p.split("=", 1) for p in argv[i + 1].split(",")[1:] if "=" in p)
            agent = FakeAgent(Path(opts["path"]))
            await agent.start()
            return agent
    return None


async def _vnc(argv: list[str]) -> asyncio.AbstractServer | None:
    """-vnc unix:PATH: greets like an RFB 3.8 server, then echoes (enough for a proxy test)."""
    target = _option(argv, "-vnc")
    if target is None:
        return None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        while data := await reader.read(1024):
            writer.write(data)

    return await asyncio.start_unix_server(serve, path=target.removeprefix("unix:"))


def main() -> None:
    failure = os.environ.get("FAKE_QEMU_FAIL")
    if failure:
        print(f"qemu-system-x86_64: {failure}", file=sys.stderr)
        sys.exit(1)
    sys.exit(asyncio.run(run(sys.argv[1:])))


if __name__ == "__main__":
    main()
