"""``hangard``: the daemon. Serves the REST API on a unix socket only root can open."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn

from hangar import __version__
from hangar.api.app import create_app
from hangar.host.probe import probe_host
from hangar.paths import Paths
from hangar.runner import SubprocessRunner
from hangar.services.platform import Platform

log = logging.getLogger("hangard")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hangard", description="the hangar daemon")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=f"hangard {__version__}")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s hangard %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        raise SystemExit("hangard: run it as root (it creates VMs, taps and sockets for them)")
    paths = Paths.from_env()
    paths.ensure()
    runner = SubprocessRunner()
    host = probe_host(runner, cache_file=paths.state / "host-probe.json")
    log.info("accelerator: %s (%s)", host.accelerator, host.accelerator_reason)
    platform = Platform.open(paths, host, runner)
    app = create_app(platform)
    sock = bind_socket(paths.socket)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio")
    server = uvicorn.Server(config)
    log.info("serving the API on %s", paths.socket)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()


if __name__ == "__main__":
    main()
