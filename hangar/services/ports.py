"""Checks that host ports asked for by port forwards are free."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

from hangar.errors import Conflict
from hangar.spec.vm import PortForward


def check_free(forwards: Iterable[PortForward], *, owners: Mapping[tuple[str, int], str]) -> None:
    """Raise :class:`Conflict` if a forward's host port is taken.

    ``owners`` maps (protocol, port) to the name of another VM that already
    claims it (stopped VMs keep their ports so they can start again). Ports held
    by any other program are found by trying to bind them.
    """
    for fwd in forwards:
        owner = owners.get((fwd.protocol, fwd.host_port))
        if owner is not None:
            raise Conflict(
                f"host port {fwd.host_port}/{fwd.protocol} is already forwarded to VM '{owner}'",
                hint="pick another host port, e.g. 8081 for guest port 80",
            )
        kind = socket.SOCK_STREAM if fwd.protocol == "tcp" else socket.SOCK_DGRAM
        family = socket.AF_INET6 if ":" in fwd.host_address else socket.AF_INET
        with socket.socket(family, kind) as probe:
            # Like QEMU's own listener: a port in TIME_WAIT after a VM stopped is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((fwd.host_address, fwd.host_port))
            except OSError as exc:
                raise Conflict(
                    f"host port {fwd.host_port}/{fwd.protocol} on {fwd.host_address} "
                    f"is not available: {exc.strerror}",
                    hint="pick another host port, or stop the program that uses it",
                ) from exc
