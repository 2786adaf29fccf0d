"""Schema migrations, in order. Never edit a released one: append a new one."""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: VMs. ``config`` is the resolved VMConfig as JSON (it carries its own
    # format version); ``state`` is the last power state hangard recorded, used
    # when no QEMU runs (stopped or crashed) — a running QEMU is asked directly.
    [
        """CREATE TABLE vms (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            config TEXT NOT NULL,
            state TEXT NOT NULL,
            state_reason TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    ],
    # 2: virtual networks. ``config`` is the resolved NetworkConfig as JSON.
    # Forwards and firewall rules name their VM by name (VM names are unique)
    # and are removed with the VM or network by the network service.
    [
        """CREATE TABLE networks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            config TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE forwards (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
            vm TEXT NOT NULL,
            spec TEXT NOT NULL
        )""",
        """CREATE TABLE firewall_rules (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            vm TEXT NOT NULL,
            spec TEXT NOT NULL
        )""",
    ],
]
