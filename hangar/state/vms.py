"""Repository of VM rows."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from hangar.errors import Conflict, NotFound
from hangar.spec.vm import VMConfig
from hangar.state.db import Database


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class VMRecord:
    config: VMConfig
    state: str
    state_reason: str
    created_at: str
    updated_at: str

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name


def _record(row: sqlite3.Row) -> VMRecord:
    return VMRecord(
        config=VMConfig.model_validate_json(row["config"]),
        state=row["state"],
        state_reason=row["state_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class VMRepository:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, config: VMConfig, state: str) -> VMRecord:
        stamp = now()
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO vms (id, name, config, state, state_reason, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, '', ?, ?)",
                    (config.id, config.name, config.model_dump_json(), state, stamp, stamp),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a VM named '{config.name}' already exists",
                hint="pick another name, or delete the existing VM first",
            ) from exc
        return VMRecord(config, state, "", stamp, stamp)

    def get(self, name: str) -> VMRecord:
        rows = self.db.query("SELECT * FROM vms WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no VM named '{name}'", hint="'hangar list' shows the VMs")
        return _record(rows[0])

    def find(self, name: str) -> VMRecord | None:
        rows = self.db.query("SELECT * FROM vms WHERE name = ?", (name,))
        return _record(rows[0]) if rows else None

    def list(self) -> list[VMRecord]:
        return [_record(r) for r in self.db.query("SELECT * FROM vms ORDER BY name")]

    def set_config(self, config: VMConfig) -> None:
        """Replace a VM's stored config (e.g. a NIC attached while it is stopped)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE vms SET config = ?, updated_at = ? WHERE id = ?",
                (config.model_dump_json(), now(), config.id),
            )

    def set_state(self, vm_id: str, state: str, reason: str = "") -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE vms SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
                (state, reason, now(), vm_id),
            )

    def delete(self, vm_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM vms WHERE id = ?", (vm_id,))
