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
    # 2: storage pools (directories) and volumes (one file each, in a pool).
    # ``vm_id`` is the VM a volume is attached to; deleting the VM detaches it
    # (volumes outlive VMs).
    [
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE volumes (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            pool TEXT NOT NULL REFERENCES pools(name),
            format TEXT NOT NULL,
            size INTEGER NOT NULL,
            vm_id TEXT REFERENCES vms(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL
        )""",
    ],
]
