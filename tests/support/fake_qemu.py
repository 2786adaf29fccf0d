"""A stand-in for qemu-system-x86_64 for component tests: same argv, fake guest.

It reads the options hangar passes (-chardev socket,id=qmp,fd=N with -mon, or
-qmp unix:PATH; -pidfile, -chardev ...console..., -S), writes its pid file, serves
QMP with :class:`FakeQMPServer` (on the inherited listening socket N, as QEMU does) and a serial
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
import socket
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


def _chardev(argv: list[str], ident: str) -> dict[str, str] | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-chardev" and f"id={ident}" in argv[i + 1].split(","):
            backend, *props = argv[i + 1].split(",")
            return {"backend": backend, **dict(p.split("=", 1) for p in props if "=" in p)}
    return None


def _qmp_socket(argv: list[str]) -> tuple[Path, socket.socket | None]:
    """Where QMP is served: (path, None) for -qmp unix:PATH; for a socket chardev on an
    inherited descriptor (-chardev socket,id=qmp,fd=N,server=on + -mon chardev=qmp,
    mode=control) the listening socket N and the path it is bound to. Refuses what
    QEMU 7.2 would refuse: a descriptor that is not a socket, not listening, or a
    chardev no control monitor uses."""
    qmp = _option(argv, "-qmp")
    chardev = _chardev(argv, "qmp")
    if qmp is not None:
        if chardev is not None:
            raise SystemExit("fake qemu: both -qmp and a qmp chardev")
        return Path(qmp.removeprefix("unix:").split(",")[0]), None
    if chardev is None or "fd" not in chardev:
        raise SystemExit("fake qemu: no QMP monitor (-qmp or -chardev socket,id=qmp,fd=N)")
    if chardev["backend"] != "socket" or chardev.get("server") != "on":
        raise SystemExit(f"fake qemu: the qmp chardev is no listening socket: {chardev}")
    if _option(argv, "-mon") != "chardev=qmp,mode=control":
        raise SystemExit("fake qemu: no -mon chardev=qmp,mode=control")
    try:
        sock = socket.socket(fileno=int(chardev["fd"]))
    except OSError as exc:
        raise SystemExit(f"fake qemu: fd {chardev['fd']} is not an open socket: {exc}") from exc
    if sock.family != socket.AF_UNIX or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise SystemExit(f"fake qemu: fd {chardev['fd']} is not a listening unix socket")
    return Path(sock.getsockname()), sock


async def run(argv: list[str]) -> int:
    pidfile = _option(argv, "-pidfile")
    assert pidfile
    qmp_path, listening = _qmp_socket(argv)
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
        listening=listening,
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
