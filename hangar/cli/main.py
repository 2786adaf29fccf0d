"""The ``hangar`` command line. It talks only to hangard, through :mod:`hangar.client`.

Each area's commands live in their own module and register on the root group.
"""

from __future__ import annotations

from hangar.cli import (
    guests,
    host,
    images,
    monitor,
    networks,
    operations,
    projects,
    remote,
    snapshots,
    storage,
    tokens,
    vms,
    volumes,
)
from hangar.cli.app import _fail, cli
from hangar.errors import InvalidInput

__all__ = [
    "cli",
    "guests",
    "host",
    "images",
    "main",
    "monitor",
    "networks",
    "operations",
    "projects",
    "remote",
    "snapshots",
    "storage",
    "tokens",
    "vms",
    "volumes",
]


def main() -> None:
    try:
        cli(standalone_mode=True)
    except InvalidInput as exc:  # raised while parsing options
        _fail(exc.message, exc.hint, exc.exit_code, exc.action, exc.details)


if __name__ == "__main__":
    main()
