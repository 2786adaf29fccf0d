"""Repository of snapshot rows and of each VM's head (the snapshot its disk is built on)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hangar.errors import Conflict, NextStep, NotFound
from hangar.spec.vm import VMConfig
from hangar.state.db import Database
from hangar.state.vms import now


@dataclass(frozen=True)
class SnapshotRecord:
    id: str
    vm_id: str
    name: str
    parent: str | None
    disk: str  # the frozen qcow2 layer
    memory: str | None  # the saved migration stream, when RAM was captured
    config: VMConfig  # the VM's config at that moment
    size: int  # bytes on disk of the layer and the stream
    created_at: str


def _record(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        id=row["id"],
        vm_id=row["vm_id"],
        name=row["name"],
        parent=row["parent"],
        disk=row["disk"],
        memory=row["memory"],
        config=VMConfig.model_validate_json(row["config"]),
        size=int(row["size"]),
        created_at=row["created_at"],
    )


class SnapshotRepository:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, snap: SnapshotRecord, *, head: bool = True) -> None:
        """Add ``snap``; with ``head``, the VM's disk is now built on it."""
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO snapshots (id, vm_id, name, parent, disk, memory, config, size,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        snap.id,
                        snap.vm_id,
                        snap.name,
                        snap.parent,
                        snap.disk,
                        snap.memory,
                        snap.config.model_dump_json(),
                        snap.size,
                        snap.created_at,
                    ),
                )
                if head:
                    self._set_head(conn, snap.vm_id, snap.id)
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"the VM already has a snapshot named '{snap.name}'",
                hint="pick another name, or delete that snapshot first",
            ) from exc

    def list(self, vm_id: str) -> list[SnapshotRecord]:
        rows = self.db.query(
            "SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created_at, name", (vm_id,)
        )
        return [_record(r) for r in rows]

    def find(self, vm_id: str, name: str) -> SnapshotRecord | None:
        rows = self.db.query("SELECT * FROM snapshots WHERE vm_id = ? AND name = ?", (vm_id, name))
        return _record(rows[0]) if rows else None

    def get(self, vm_id: str, name: str, vm_name: str) -> SnapshotRecord:
        snap = self.find(vm_id, name)
        if snap is None:
            raise NotFound(
                f"VM '{vm_name}' has no snapshot named '{name}'",
                hint="list the VM's snapshots to see which there are",
                details={"vm": vm_name},
                action=NextStep.LIST_SNAPSHOTS,
            )
        return snap

    def head(self, vm_id: str) -> str | None:
        rows = self.db.query("SELECT snapshot_id FROM snapshot_heads WHERE vm_id = ?", (vm_id,))
        return str(rows[0][0]) if rows else None

    def set_head(self, vm_id: str, snapshot_id: str | None) -> None:
        with self.db.transaction() as conn:
            self._set_head(conn, vm_id, snapshot_id)

    @staticmethod
    def _set_head(conn: sqlite3.Connection, vm_id: str, snapshot_id: str | None) -> None:
        conn.execute("DELETE FROM snapshot_heads WHERE vm_id = ?", (vm_id,))
        if snapshot_id is not None:
            conn.execute(
                "INSERT INTO snapshot_heads (vm_id, snapshot_id) VALUES (?, ?)",
                (vm_id, snapshot_id),
            )

    def remove(self, snap: SnapshotRecord, *, new_head: str | None, head_changes: bool) -> None:
        """Delete ``snap``: its children now hang from its parent; with ``head_changes``
        the VM's head becomes ``new_head``."""
        with self.db.transaction() as conn:
            if head_changes:
                self._set_head(conn, snap.vm_id, new_head)
            conn.execute("UPDATE snapshots SET parent = ? WHERE parent = ?", (snap.parent, snap.id))
            conn.execute("DELETE FROM snapshots WHERE id = ?", (snap.id,))

    def set_size(self, snapshot_id: str, size: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE snapshots SET size = ? WHERE id = ?", (size, snapshot_id))


def new_record(
    *,
    snapshot_id: str,
    vm_id: str,
    name: str,
    parent: str | None,
    disk: str,
    memory: str | None,
    config: VMConfig,
    size: int,
) -> SnapshotRecord:
    return SnapshotRecord(
        id=snapshot_id,
        vm_id=vm_id,
        name=name,
        parent=parent,
        disk=disk,
        memory=memory,
        config=config,
        size=size,
        created_at=now(),
    )
