"""``hangard``: the daemon. Serves the REST API on a unix socket only root can open,
and with ``--listen HOST:PORT`` over HTTPS too, where every request needs a token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from hangar import __version__
from hangar.api.app import create_app
from hangar.api.auth import LocalListener
from hangar.api.limits import (
    LOCAL_CONNECTIONS,
    AcceptErrors,
    bound_tls_handshakes,
    guard,
    raise_fd_limit,
    tcp_connections,
)
from hangar.api.tls import ensure_certificate, fingerprint
from hangar.certs import harden
from hangar.host.probe import probe_host
from hangar.paths import Paths, private_process
from hangar.runner import SubprocessRunner
from hangar.services.platform import Platform

log = logging.getLogger("hangard")
# A websocket message: console keystrokes and VNC input are far smaller.
WS_MAX_SIZE = 1024 * 1024


def bind_socket(path: Path) -> socket.socket:
    """Bind the API socket with mode 0600 (its folder is 0700 too).

    Refuses to take over the socket of a hangard that is still answering.
    """
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by a hangard that died
        else:
            probe.close()
            raise SystemExit(f"hangard: another hangard is already serving {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"hangard: --listen wants HOST:PORT, got '{text}'")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(servers: list[tuple[uvicorn.Server, list[socket.socket] | None]]) -> None:
    """Run the servers together; when one stops (a signal), stop the others too."""
    asyncio.get_running_loop().set_exception_handler(AcceptErrors())
    tasks = [asyncio.create_task(server.serve(sockets=socks)) for server, socks in servers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


def tls_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's context (certificate and key loaded) restricted to TLS 1.2+ and modern
    suites: uvicorn itself sets no minimum version."""
    return harden(default())


def remote_config(
    app: ASGIApp, host: str, port: int, cert: Path, key: Path, max_connections: int = 64
) -> uvicorn.Config:
    """The HTTPS listener's configuration."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",  # the local server runs the platform's start and stop
        ws="websockets-sansio",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_context_factory=tls_context,
        ws_max_size=WS_MAX_SIZE,
    )
    guard(config, max_connections)
    return config


def local_config(app: ASGIApp) -> uvicorn.Config:
    """The unix socket's configuration: its own server, so its own connection cap."""
    config = uvicorn.Config(
        LocalListener(app),
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_SIZE,
    )
    guard(config, LOCAL_CONNECTIONS)
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hangard", description="the hangar daemon")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=f"hangard {__version__}")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="also serve HTTPS there (token required)"
    )
    parser.add_argument("--cert", type=Path, help="TLS certificate (PEM) instead of hangard's own")
    parser.add_argument("--key", type=Path, help="private key (PEM) of --cert")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s hangard %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        raise SystemExit("hangard: run it as root (it creates VMs, taps and sockets for them)")
    private_process()
    fd_limit = raise_fd_limit()
    bound_tls_handshakes()
    paths = Paths.from_env()
    paths.ensure()
    runner = SubprocessRunner()
    host = probe_host(runner, cache_file=paths.state / "host-probe.json")
    log.info("accelerator: %s (%s)", host.accelerator, host.accelerator_reason)
    platform = Platform.open(paths, host, runner)
    app = create_app(platform)
    sock = bind_socket(paths.socket)
    local = local_config(app)
    servers: list[tuple[uvicorn.Server, list[socket.socket] | None]] = [
        (uvicorn.Server(local), [sock])
    ]
    log.info("serving the API on %s", paths.socket)
    if args.listen:
        listen_host, port = parse_listen(args.listen)
        cert, key = ensure_certificate(paths.state, listen_host, args.cert, args.key)
        remote = remote_config(app, listen_host, port, cert, key, tcp_connections(fd_limit))
        servers.append((uvicorn.Server(remote), None))
        log.info(
            "serving HTTPS on %s:%d, certificate fingerprint %s",
            listen_host,
            port,
            fingerprint(cert.read_text()),
        )
    try:
        asyncio.run(serve(servers))
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()


if __name__ == "__main__":
    main()
