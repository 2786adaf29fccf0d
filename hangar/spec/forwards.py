"""Port forwards as people write them: ``[HOST_IP:]HOSTPORT:GUESTPORT[/tcp|udp]``.

Pure and free of pydantic: the CLI parses ``--forward`` with it without loading the
spec's models (start-up time); :class:`hangar.spec.vm.PortForward` validates again.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hangar.errors import InvalidInput

HINT = "write HOSTPORT:GUESTPORT, e.g. 8080:80, optionally with /udp"


def parse_forward(text: str) -> dict[str, Any]:
    """The fields of a :class:`PortForward` (host_address only when given)."""
    spec, _, proto = text.partition("/")
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[-2:]):
        raise InvalidInput(f"port forward '{text}' is not HOSTPORT:GUESTPORT", hint=HINT)
    if proto not in ("", "tcp", "udp"):
        raise InvalidInput(f"port forward '{text}' has protocol '{proto}'", hint=HINT)
    host_port, guest_port = int(parts[-2]), int(parts[-1])
    if not (1 <= host_port <= 65535 and 1 <= guest_port <= 65535):
        raise InvalidInput(f"port forward '{text}' is out of range", hint=HINT)
    values: dict[str, Any] = {
        "host_port": host_port,
        "guest_port": guest_port,
        "protocol": proto or "tcp",
    }
    if len(parts) == 3:
        try:
            # A dotted IPv4 literal only: it is spliced into QEMU's option string.
            values["host_address"] = str(ipaddress.IPv4Address(parts[0]))
        except ValueError:
            raise InvalidInput(
                f"port forward '{text}' names no IPv4 host address", hint=HINT
            ) from None
    return values
